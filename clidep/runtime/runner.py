"""Torch-free ONNX Runtime runner (numpy + onnxruntime only): forward, KV cache, greedy/sampled generation.

``clidep generate`` and the benchmark runner use this module; it must never import torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clidep.runtime import onnx_io
from clidep.runtime.onnx_io import decode_kv_shapes, kv_shapes_from_config


class OnnxCausalLM:
    """An exported clidep/GPT-2 decoder graph with its KV-cache layout read from the metadata."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.kv_shapes = decode_kv_shapes(self.session.get_modelmeta().custom_metadata_map)
        if self.kv_shapes is None:  # another exporter's graph (optimum's): read the layout from config.json
            config = Path(path).parent / "config.json"
            if not config.is_file():
                raise ValueError(f"{path} has no clidep KV metadata and no config.json beside it")
            self.kv_shapes = kv_shapes_from_config(json.loads(config.read_text()))
        self.n_layer = len(self.kv_shapes)
        self.output_names = [o.name for o in self.session.get_outputs()]
        past = next(i for i in self.session.get_inputs() if i.name.startswith("past_key_values"))
        self.past_type = np.float16 if "float16" in past.type else np.float32

    def empty_past(self, batch: int) -> list[np.ndarray]:
        """Zero-length past for every block: (B, heads_i, 0, head_dim_i), key then value."""
        return onnx_io.empty_past(self.kv_shapes, batch, self.past_type)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One pass: logits (B, T, V) and the presents (B, heads_i, P + T, head_dim_i)."""
        out = self.session.run(self.output_names, onnx_io.feeds(input_ids, attention_mask, position_ids, past))
        return out[0], out[1:]

    def decode_step(self, next_ids: np.ndarray, mask: np.ndarray, pos: np.ndarray,
                    past: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """Feed one new token per row (B, 1) after PAST: (logits, mask, positions, presents) for the next step."""
        mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=np.int64)], axis=1)  # (B, S + 1)
        pos = pos[:, -1:] + 1  # (B, 1)
        logits, past = self.forward(next_ids, mask, pos, past)
        return logits, mask, pos, past

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Logits of full sequences without a past: the ``LogitsFn`` that perplexity() takes."""
        B, T = input_ids.shape
        mask = np.ones((B, T), dtype=np.int64)
        pos = np.broadcast_to(np.arange(T, dtype=np.int64), (B, T))
        return self.forward(input_ids, mask, pos, self.empty_past(B))[0].astype(np.float32)

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None, max_new_tokens: int = 32,
                 temperature: float = 0.0, top_k: int = 0, eos_token_id: int | None = None,
                 seed: int = 0) -> np.ndarray:
        """Prefill then decode with the KV cache; greedy when ``temperature`` is 0. Returns prompt + new tokens."""
        rng = np.random.default_rng(seed)
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
        # Left padding: positions count real tokens only, as transformers' generate() does.
        pos = onnx_io.left_pad_positions(mask)
        logits, past = self.forward(ids, mask, pos, self.empty_past(ids.shape[0]))
        done = np.zeros(ids.shape[0], dtype=bool)
        for step in range(max_new_tokens):
            nxt = self._pick(logits[:, -1].astype(np.float64), temperature, top_k, rng)
            if eos_token_id is not None:
                nxt = np.where(done, eos_token_id, nxt)
                done |= nxt == eos_token_id
            ids = np.concatenate([ids, nxt[:, None]], axis=1)
            if done.all() or step == max_new_tokens - 1:
                break
            logits, mask, pos, past = self.decode_step(nxt[:, None], mask, pos, past)
        return ids

    @staticmethod
    def _pick(logits: np.ndarray, temperature: float, top_k: int, rng) -> np.ndarray:
        if temperature <= 0:
            return logits.argmax(-1)
        z = logits / temperature
        if top_k:
            kth = np.sort(z, axis=-1)[:, -min(top_k, z.shape[-1])][:, None]  # k above the vocabulary: all
            z = np.where(z < kth, -np.inf, z)
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return np.array([rng.choice(p.shape[-1], p=row) for row in p])
