"""An ExecuTorch program (.pte, export --executorch) read through ExecuTorch's own runtime, its Python bindings.

The program holds its KV cache in mutable buffers (export/et_model.py); each load of its ``forward`` method plans
them anew, so a fresh load is an empty cache. Its attention runs on ExecuTorch's LLM custom ops
(``llama::update_cache``, ``llama::custom_sdpa``) and a quantised program's token table on
``quantized_decomposed::embedding_byte``, whose kernels load into the bindings with
``executorch.extension.llm.custom_ops`` and ``executorch.kernels.quantized``, as ExecuTorch's LLM runner links
them. ExecuTorch's bindings take and return torch tensors, so this reader, unlike clidep's ONNX runner, needs
torch.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def set_threads(threads: int | None) -> None:
    """ExecuTorch's XNNPACK threadpool to THREADS threads (None: its default, one per core)."""
    from executorch.extension.pybindings import portable_lib

    if threads:
        portable_lib._unsafe_reset_threadpool(threads)


class Program:
    """One .pte file loaded in ExecuTorch's runtime, read as a causal LM."""

    def __init__(self, path: str | Path):
        from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (the cache and attention kernels)
        from executorch.kernels import quantized  # noqa: F401  (the 8-bit token table's lookup)
        from executorch.runtime import Runtime

        self.path = Path(path)
        self.program = Runtime.get().load_program(self.path)
        self.context = int(self.program.load_method("get_max_seq_len").execute([])[0])
        self.vocab = int(self.program.load_method("get_vocab_size").execute([])[0])

    def fresh(self):
        """The forward method with an empty cache: each load plans the program's buffers anew."""
        return self.program.load_method("forward")

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """(B, T) ids -> (B, T, V) float32 logits, each row prefilled into an empty cache (clidep's LogitsFn)."""
        import torch

        rows = []
        for row in np.asarray(ids, dtype=np.int64):
            forward = self.fresh()
            rows.append(forward.execute([torch.from_numpy(row[None]), torch.arange(row.size)])[0][0].numpy())
        return np.stack(rows)

    def greedy(self, prompt: np.ndarray, new_tokens: int) -> np.ndarray:
        """PROMPT (1, P) and its greedy continuation of NEW_TOKENS, decoded a token at a time through the cache."""
        import torch

        forward = self.fresh()
        out = [int(t) for t in prompt[0]]
        logits = forward.execute([torch.tensor([out]), torch.arange(len(out))])[0]
        for _ in range(new_tokens):
            out.append(int(logits[0, -1].argmax()))
            logits = forward.execute([torch.tensor([[out[-1]]]), torch.tensor([len(out) - 1])])[0]
        return np.array([out])

    def prefill_ms(self, ids: np.ndarray) -> float:
        """ms of one prompt pass of IDS (1, n) into an empty cache (the method loaded before the clock starts)."""
        import torch

        forward, x, pos = self.fresh(), torch.from_numpy(np.asarray(ids, np.int64)), torch.arange(ids.shape[1])
        t = time.perf_counter()
        forward.execute([x, pos])
        return (time.perf_counter() - t) * 1e3

    def decode_ms(self, ids: np.ndarray, gen: int, warmup: int) -> tuple[list[float], float]:
        """(ms of each of GEN greedy decode steps after the prompt IDS (1, P) and WARMUP untimed steps, ms to the
        first token: the prompt's pass and the pick of its next token), as benchrun times every runtime."""
        import torch

        forward, P = self.fresh(), ids.shape[1]
        t = time.perf_counter()
        logits = forward.execute([torch.from_numpy(np.asarray(ids, np.int64)), torch.arange(P)])[0]
        nxt = int(logits[0, -1].argmax())
        ttft = (time.perf_counter() - t) * 1e3
        samples = []
        for i in range(warmup + gen):
            t = time.perf_counter()
            logits = forward.execute([torch.tensor([[nxt]]), torch.tensor([P + i])])[0]
            nxt = int(logits[0, -1].argmax())
            if i >= warmup:
                samples.append((time.perf_counter() - t) * 1e3)
        return samples, ttft
