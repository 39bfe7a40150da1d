"""Torch-free ONNX Runtime runner (numpy + onnxruntime only): forward, KV cache, greedy/sampled generation.

``clidep generate`` and the benchmark runner use this module; it must never import torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clidep.runtime import onnx_io
from clidep.runtime.onnx_io import decode_kv_shapes, kv_shapes_from_config

#: The cache element types a graph may declare (export/kv_cache.py): (precision's name, numpy type).
_CACHE_TYPES = {
    "tensor(float)": ("fp32", np.float32),
    "tensor(float16)": ("fp16", np.float16),
    "tensor(int8)": ("int8", np.int8),
}


def cache_precision_of(dtype) -> str:
    """The precision's name (fp32, fp16, int8) of a cache of numpy type DTYPE, as the runner names it."""
    return next(name for name, t in _CACHE_TYPES.values() if np.dtype(t) == np.dtype(dtype))


class SharedKV:
    """The shared-buffer graph's cache: per block a key and a value buffer (B, heads_i, capacity,
    head_dim_i), bound as both past input and present output so each pass writes its new
    positions in place; ``lengths`` (B,) counts each row's tokens so far."""

    def __init__(self, kv_shapes: list[tuple[int, int]], batch: int, capacity: int, dtype):
        import onnxruntime as ort

        self.buffers = [np.zeros((batch, h, capacity, d), dtype) for h, d in kv_shapes for _ in range(2)]
        self.values = [ort.OrtValue.ortvalue_from_numpy(b) for b in self.buffers]  # views of the buffers
        self.lengths = np.zeros(batch, np.int64)
        self.capacity = capacity
        self.binding = None  # the session's IO binding with the buffers bound, made on the first pass
        self.step = None  # a decode step's inputs and logits, allocated once (see step_buffers)
        self.step_bound = False  # whether the binding holds them (a prompt pass binds its own)

    def bind(self, session, n_layer: int):
        """The IO binding of SESSION with every buffer bound as past and present: bound once, reused each
        step: rebinding 4 x n_layer buffers every token cost the reference teacher's int4 decode 0.55 -> 0.50 ms here)."""
        if self.binding is None:
            self.binding = session.io_binding()
            self.binding.bind_output("logits")  # first: get_outputs()[0]; rebinding it keeps its place
            for i in range(n_layer):
                for j, kind in enumerate(("key", "value")):
                    self.binding.bind_ortvalue_input(onnx_io.past_name(i, kind), self.values[2 * i + j])
                    self.binding.bind_ortvalue_output(f"present.{i}.{kind}", self.values[2 * i + j])
        return self.binding

    def step_buffers(self, vocab: int, logits_dtype) -> tuple[np.ndarray, ...]:
        """(ids (B, 1), positions (B, 1), logits (B, 1, V), logits_to_keep) of a decode step: allocated and
        wrapped as OrtValues once per cache, written in place each step (the OrtValues share their memory)."""
        import onnxruntime as ort

        if self.step is None:
            B = len(self.lengths)
            arrays = (
                np.zeros((B, 1), np.int64),
                np.zeros((B, 1), np.int64),
                np.zeros((B, 1, vocab), logits_dtype),
                np.array(1, np.int64),
            )
            self.step = arrays, [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
        return self.step

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """(B, heads_i, tokens so far, head_dim_i) of each key and value, as a growing cache reports them."""
        B, used = len(self.lengths), int(self.lengths.max())
        return [(B, b.shape[1], used, b.shape[3]) for b in self.buffers]


class OnnxCausalLM:
    """An exported clidep/GPT-2 decoder graph with its KV-cache layout read from the metadata.

    Two layouts run through the same calls: the traced graph, whose present is a new array one
    step longer than its past (``forward`` returns that list), and the ONNX Runtime graph with
    shared buffers (``forward`` returns the same ``SharedKV``, advanced in place). Callers pass
    left-padded batches either way, as transformers does; the runner right-pads them for the
    shared-buffer graph and returns logits in the caller's layout.
    """

    def __init__(self, path: str | Path, threads: int | None = None, prepack: bool = True):
        """PREPACK False keeps ONNX Runtime from laying the weights out again for its kernels: a second copy
        of an fp32 graph's weights (1,030 against 615 MB resident for a 551 MB graph), for slower prefill."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not prepack:
            options.add_session_config_entry("session.disable_prepacking", "1")
        # ORT warns that logits_to_keep, an input with a default, is not folded as a constant: by design.
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.kv_shapes = decode_kv_shapes(metadata)
        if self.kv_shapes is None:  # another exporter's graph (optimum's): read the layout from config.json
            config = Path(path).parent / "config.json"
            if not config.is_file():
                raise ValueError(f"{path} has no clidep KV metadata and no config.json beside it")
            self.kv_shapes = kv_shapes_from_config(json.loads(config.read_text()))
        self.shared = metadata.get(onnx_io.KV_LAYOUT_KEY) == onnx_io.SHARED_BUFFER
        self.max_length = int(metadata.get(onnx_io.MAX_LENGTH_KEY, 0)) or None
        self.n_layer = len(self.kv_shapes)
        self.output_names = [o.name for o in self.session.get_outputs()]
        past = next(i for i in self.session.get_inputs() if i.name.startswith("past_key_values"))
        self.cache_precision, self.past_type = _CACHE_TYPES[past.type]
        logits = self.session.get_outputs()[0]
        self.vocab = logits.shape[-1] if isinstance(logits.shape[-1], int) else None
        self.logits_type = np.float16 if "float16" in logits.type else np.float32

    def empty_past(self, batch: int, capacity: int | None = None):
        """An empty cache for BATCH rows: zero-length arrays (B, heads_i, 0, head_dim_i), key then value,
        or for the shared-buffer graph buffers of CAPACITY positions (default: the model's maximum)."""
        if self.shared:
            return SharedKV(self.kv_shapes, batch, capacity or self.max_length, self.past_type)
        return onnx_io.empty_past(self.kv_shapes, batch, self.past_type)

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray, past, last_only: bool = False
    ):
        """One pass: logits (B, T, V), or (B, 1, V) with LAST_ONLY, and the cache after it.

        ATTENTION_MASK covers past and new tokens (B, P + T); padding may only precede a row's
        first token. The traced graph returns new arrays (B, heads_i, P + T, head_dim_i); the
        shared-buffer graph advances PAST in place and returns it.
        """
        if self.shared:
            return self._forward_shared(
                np.asarray(input_ids, np.int64), np.asarray(attention_mask, np.int64), past, last_only
            )
        out = self.session.run(self.output_names, onnx_io.feeds(input_ids, attention_mask, position_ids, past))
        return (out[0][:, -1:] if last_only else out[0]), out[1:]

    def _forward_shared(self, ids: np.ndarray, mask: np.ndarray, kv: SharedKV, last_only: bool):
        import onnxruntime as ort

        B, T = ids.shape
        first = not kv.lengths.any()
        if not first and T == 1 and mask[:, -1].all() and self.vocab:
            return self._decode_shared(ids, kv), kv
        kv.step_bound = False  # this pass binds inputs and logits of its own shapes
        if first:  # the prompt: each row's tokens moved to the front
            ids, _, positions, shift = onnx_io.right_pad(ids, mask[:, -T:])
            new = mask[:, -T:].sum(-1)
        elif not mask[:, -T:].all():
            raise ValueError("after the prompt every row must add the same number of real tokens")
        elif B > 1 and T > 1:  # GroupQueryAttention takes several new tokens after a past for batch 1 only
            steps = [
                self._forward_shared(ids[:, t : t + 1], mask[:, : mask.shape[1] - T + t + 1], kv, False)[0]
                for t in range(T)
            ]
            return (steps[-1] if last_only else np.concatenate(steps, axis=1)), kv
        else:
            positions, shift, new = kv.lengths[:, None] + np.arange(T), np.zeros(B, np.int64), np.full(B, T)
        lengths = kv.lengths + new
        if lengths.max() > kv.capacity:
            raise ValueError(f"{int(lengths.max())} tokens exceed the cache's {kv.capacity} positions")
        uniform = bool((new == T).all())
        keep = 1 if last_only and uniform else 0
        graph_mask = (np.arange(int(lengths.max()))[None] < lengths[:, None]).astype(np.int64)
        binding = kv.bind(self.session, self.n_layer)
        small = [
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v, np.int64))
            for v in (ids, graph_mask, positions, np.array(keep))
        ]  # kept alive until the run ends
        for name, value in zip(("input_ids", "attention_mask", "position_ids", onnx_io.LOGITS_TO_KEEP), small):
            binding.bind_ortvalue_input(name, value)  # (bind_cpu_input cannot find an input that has a default)
        if (
            self.vocab
        ):  # written in place: ORT's own output and its numpy copy held 2 x 206 MB at GPT-2's 1,024 x 50,257
            logits = np.empty((B, keep or T, self.vocab), self.logits_type)
            out = ort.OrtValue.ortvalue_from_numpy(logits)
            binding.bind_ortvalue_output("logits", out)
        else:
            binding.bind_output("logits")  # ORT allocates it, at this pass's shape
        self.session.run_with_iobinding(binding)
        if not self.vocab:
            logits = binding.get_outputs()[0].numpy()
        kv.lengths = lengths
        if keep:
            return logits, kv
        if shift.any():  # back to the caller's left-padded layout
            cols = (np.arange(T)[None] - shift[:, None]) % T
            logits = logits[np.arange(B)[:, None], cols]
        return (logits[:, -1:] if last_only else logits), kv

    def _decode_shared(self, ids: np.ndarray, kv: SharedKV) -> np.ndarray:
        """One decode step (B, 1) of the shared-buffer graph through KV's step buffers: the only things
        allocated are the attention mask, whose length grows, and the copy of the logits returned.

        Profiled first (cProfile, the reference teacher's int4, 265 steps): the general pass made 241
        Python calls a step, wrapping all 25 outputs (get_outputs) and four new inputs every token; this
        makes 61. Interleaved with ONNX Runtime GenAI's loop (5 x 128 tokens after 32, medians, this
        2-core VM while it showed 33% steal time): int4 at 1 thread 2.38 -> 2.02 ms/token (GenAI 1.66),
        at 2 threads 1.89 -> 1.78 (1.43); int8 3.22 -> 2.78 (2.42) and 1.70 -> 1.35 (1.16). At GPT-2
        small's shapes (random weights, 7 interleaved reps of 64 tokens, no steal): int4 10.32 -> 9.88 ms
        at 1 thread, 5.82 -> 5.53 at 2; int8 19.81 -> 18.60 and 8.84 -> 9.09 (sd 0.6-0.7 ms: a tie).
        """
        import onnxruntime as ort

        (ids_buf, pos_buf, logits_buf, _), values = kv.step_buffers(self.vocab, self.logits_type)
        lengths = kv.lengths + 1
        if lengths.max() > kv.capacity:
            raise ValueError(f"{int(lengths.max())} tokens exceed the cache's {kv.capacity} positions")
        ids_buf[:] = ids
        pos_buf[:, 0] = kv.lengths
        binding = kv.bind(self.session, self.n_layer)
        if not kv.step_bound:
            for name, value in zip(("input_ids", "position_ids", onnx_io.LOGITS_TO_KEEP), values[:2] + values[3:]):
                binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output("logits", values[2])
            kv.step_bound = True
        graph_mask = np.ones((len(lengths), int(lengths.max())), np.int64)
        if (lengths != lengths[0]).any():
            graph_mask = (np.arange(graph_mask.shape[1])[None] < lengths[:, None]).astype(np.int64)
        mask_value = ort.OrtValue.ortvalue_from_numpy(graph_mask)  # kept alive until the run ends
        binding.bind_ortvalue_input("attention_mask", mask_value)
        self.session.run_with_iobinding(binding)
        kv.lengths = lengths
        return logits_buf.copy()  # the buffer is the next step's

    def present_shapes(self, past) -> list[tuple[int, ...]]:
        """(B, heads_i, tokens so far, head_dim_i) of each cached key and value, for either layout."""
        return past.shapes if self.shared else [p.shape for p in past]

    def decode_step(
        self, next_ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, past
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """Feed one new token per row (B, 1) after PAST: (logits, mask, positions, cache) for the next step."""
        mask = np.concatenate([mask, np.ones((mask.shape[0], 1), dtype=np.int64)], axis=1)  # (B, S + 1)
        pos = pos[:, -1:] + 1  # (B, 1)
        logits, past = self.forward(next_ids, mask, pos, past)
        return logits, mask, pos, past

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Logits of full sequences without a past: the ``LogitsFn`` that perplexity() takes."""
        B, T = input_ids.shape
        mask = np.ones((B, T), dtype=np.int64)
        pos = np.broadcast_to(np.arange(T, dtype=np.int64), (B, T))
        return self.forward(input_ids, mask, pos, self.empty_past(B, T))[0].astype(np.float32, copy=False)

    def generate(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int = 0,
        eos_token_id: int | None = None,
        seed: int = 0,
    ) -> np.ndarray:
        """Prefill then decode with the KV cache; greedy when ``temperature`` is 0. Returns prompt + new tokens."""
        rng = np.random.default_rng(seed)
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, dtype=np.int64)
        # Left padding: positions count real tokens only, as transformers' generate() does.
        pos = onnx_io.left_pad_positions(mask)
        capacity = min(ids.shape[1] + max_new_tokens, self.max_length or ids.shape[1] + max_new_tokens)
        logits, past = self.forward(ids, mask, pos, self.empty_past(ids.shape[0], capacity), last_only=True)
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
