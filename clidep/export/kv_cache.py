"""The precision of the ONNX Runtime graph's KV cache: fp32, fp16, or int8 with calibrated scales.

Decode reads the whole cache every token: GPT-2 medium at 952 tokens holds 187 MB of fp32 keys and
values, as much as its int4 weights, which is why its decode slowed with the context. ONNX Runtime's
``GroupQueryAttention`` stores the shared past/present buffers in a narrower type itself:

* ``fp16``: the buffers are float16; queries, keys and values are computed in fp32 (CPU kernels
  take an fp16 cache beside fp32 activations). No scales.
* ``int8``: the buffers are int8, ``k_quant_type`` / ``v_quant_type`` PER_TENSOR or PER_CHANNEL
  with ``kv_cache_bit_width`` 8, the scales given as the op's ``k_scale`` / ``v_scale`` inputs
  (initializers ``transformer.h.{i}.attn.k_scale``, flat: 1 value, or heads x head size). The
  scales are symmetric, absmax / 127 of each channel (or of the whole tensor) as the fp32 graph
  computes keys and values on calibration text (``calibrate``); a value past the calibrated range
  saturates. On ONNX Runtime's CPU kernels a prompt pass already attends through the quantised
  cache, so the export's perplexity check measures what decode reads.

ONNX Runtime GenAI reads the cache type from the graph's inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clidep.errors import ClidepError

if TYPE_CHECKING:
    from clidep.export.config import ExportConfig
    from clidep.runtime.manifest import Variant

#: The precisions ``clidep export --kv`` takes.
KV_PRECISIONS = ("fp32", "fp16", "int8")
#: int8 scale modes: one scale per tensor, or one per (head, channel).
KV_MODES = ("per-tensor", "per-channel")
#: The largest magnitude an int8 cache entry holds (symmetric).
INT8_MAX = 127
#: What the int8 cache may cost against the same file with an fp32 cache, on the export's perplexity
#: text (the long-context issue's target): the export fails past it.
KV_PPL_GATE = 0.005
#: and the share of teacher-forced decode steps where it picks the token the fp32 cache picks: the reference
#: teacher's int8 cache 98.2-99.6% on 8 x 64 steps (benchmarks/results/kv_cache.md), a random-weight CLI
#: student's 94.9% (near-flat logits flip on any rounding); 90%, as the int8 weights' own gate.
KV_AGREEMENT_GATE = 0.90


@dataclass(frozen=True)
class CacheFormat:
    """How one graph stores its KV cache: PRECISION, and for int8 the MODE and each block's scales."""

    precision: str = "fp32"
    mode: str = ""  # int8 only: "per-tensor" or "per-channel"
    scales: tuple[tuple[np.ndarray, np.ndarray], ...] = ()  # per block (key scale, value scale), flat float32

    @property
    def onnx_type(self) -> int:
        """The buffers' ONNX element type."""
        from onnx import TensorProto

        return {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "int8": TensorProto.INT8}[self.precision]

    def attributes(self) -> dict:
        """GroupQueryAttention's attributes for this cache (none for a float one)."""
        if self.precision != "int8":
            return {}
        kind = self.mode.replace("-", "_").upper()
        return {"k_quant_type": kind, "v_quant_type": kind, "kv_cache_bit_width": 8}

    def record(self) -> dict:
        """What the manifest says of it."""
        return {
            "precision": self.precision,
            **({"mode": self.mode, "scale": f"absmax / {INT8_MAX}"} if self.precision == "int8" else {}),
        }


def calibrate(graph, windows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per block (max |key|, max |value|), each (heads, head size), over WINDOWS (N, L) run through GRAPH
    (a shared-buffer graph file with an fp32 cache), read from the buffers the prompt pass filled."""
    from clidep.runtime.runner import OnnxCausalLM

    runner = OnnxCausalLM(graph, prepack=False)  # an fp32 graph: see OnnxCausalLM
    absmax = None
    for row in np.asarray(windows, np.int64):
        ids = row[None]
        kv = runner.empty_past(1, ids.shape[1])
        runner.forward(ids, np.ones_like(ids), np.arange(ids.shape[1])[None], kv, last_only=True)
        seen = [np.abs(b[0]).max(axis=1) for b in kv.buffers]  # (heads, head size) per buffer
        absmax = seen if absmax is None else [np.maximum(a, s) for a, s in zip(absmax, seen)]
    return list(zip(absmax[::2], absmax[1::2]))


def int8_format(absmax: list[tuple[np.ndarray, np.ndarray]], mode: str) -> CacheFormat:
    """The int8 cache whose scales are ABSMAX / 127 per channel, or per tensor. Channels that never
    move (a padded head's zeros) get the smallest normal scale, which they never use."""
    tiny = np.finfo(np.float32).tiny

    def scale(a: np.ndarray) -> np.ndarray:
        a = a.reshape(-1) if mode == "per-channel" else np.array([a.max()])
        return (np.maximum(a, tiny) / INT8_MAX).astype(np.float32)

    return CacheFormat("int8", mode, tuple((scale(k), scale(v)) for k, v in absmax))


def decode_predictions(runner, windows: np.ndarray, prompt: int) -> np.ndarray:
    """The next token RUNNER (an OnnxCausalLM) picks (argmax) at each position of WINDOWS (N, L) after the first PROMPT
    tokens, reading every one through its KV cache: the prompt in one pass, then the window's own
    tokens one decode step at a time (teacher-forced, so one early flip does not decide the rest).
    (N, L - PROMPT) int64."""
    windows = np.asarray(windows, np.int64)
    n, length = windows.shape
    picks = np.zeros((n, length - prompt), np.int64)
    for r, row in enumerate(windows):
        mask, pos = np.ones((1, prompt), np.int64), np.arange(prompt)[None]
        logits, past = runner.forward(row[None, :prompt], mask, pos, runner.empty_past(1, length), last_only=True)
        picks[r, 0] = logits[0, -1].argmax()
        for t in range(prompt, length - 1):
            logits, mask, pos, past = runner.decode_step(row[None, t : t + 1], mask, pos, past)
            picks[r, t - prompt + 1] = logits[0, -1].argmax()
    return picks


def store_cache(src, dst, cache: CacheFormat):
    """The ONNX Runtime graph at SRC (an fp32 cache, as ort_graph writes it) with its KV buffers stored as
    CACHE, at DST: past and present typed, each GroupQueryAttention given the quantisation attributes and
    (int8) its block's scales as inputs 12 and 13 (7-11, rotary caches to head sink, stay unused). Torch-free:
    the export applies it to the quantised files after the torch model is gone."""
    from onnx import helper, numpy_helper

    from clidep.export.onnx_file import load_graph, save_graph

    model = load_graph(src)
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.elem_type = cache.onnx_type
    for node in graph.node:
        if node.op_type != "GroupQueryAttention":
            continue
        node.attribute.extend(helper.make_attribute(k, v) for k, v in cache.attributes().items())
        if cache.scales:
            block = int(node.name.split(".")[2])  # transformer.h.{i}.attn
            names = [f"{node.name}.k_scale", f"{node.name}.v_scale"]
            node.input.extend([""] * (12 - len(node.input)) + names)
            graph.initializer.extend(numpy_helper.from_array(s, n) for s, n in zip(cache.scales[block], names))
    return save_graph(model, dst)


def apply(
    c: ExportConfig,
    tmp: Path,
    variants: list[Variant],
    cached: list[str],
    ids,
    context: int,
    reference,
    calibration: tuple,
    windows,
    log,
) -> dict:
    """--kv: each quantised ONNX Runtime graph file (CACHED) rewritten with the cache C.cache_precision, held
    to the KV gates against the same file with its fp32 cache, and swapped in; its manifest entry updated
    in place. CALIBRATION: (windows (N, L), label) for int8 scales. Returns the manifest's ``kv_cache``
    record."""
    import os

    precision = c.cache_precision
    record = {
        "precision": precision,
        "files": sorted(cached),
        "gates": {"ppl_delta": KV_PPL_GATE, "decode_agreement": KV_AGREEMENT_GATE},
    }
    cache = CacheFormat(precision)
    if precision == "int8":
        calib, label = calibration
        cache = int8_format(calibrate(tmp / variants[0].file, calib), c.kv_scales)
        record["calibration"] = {"data": label, "windows": len(calib), "tokens": calib.shape[1]}
    record.update(cache.record())
    scratch = tmp / "kv-cache"
    scratch.mkdir()
    for v in (v for v in variants if v.file in cached):
        log(f"{v.file}: writing its {precision} KV cache")
        store_cache(tmp / v.file, scratch / v.file, cache)
        _check(v, (tmp / v.file, scratch / v.file), cache, (ids, context, variants[0].vocab_size), reference, windows)
        for name in (v.file, f"{v.file}.data"):
            if (scratch / name).exists():
                os.replace(scratch / name, tmp / name)
    scratch.rmdir()
    return record


def _check(v: Variant, files: tuple, cache: CacheFormat, text: tuple, reference, windows) -> None:
    """V's file with CACHE (FILES: the file with its fp32 cache, then with CACHE) against itself with its fp32
    cache: perplexity on TEXT (ids, context, vocabulary size) and next tokens decoded on WINDOWS, within the KV
    gates (ClidepError otherwise); V's entry updated with its figures and its parity with REFERENCE."""
    from clidep.export.validate import validate_export
    from clidep.perplexity import perplexity, ppl_batch
    from clidep.runtime.runner import OnnxCausalLM

    (src, dst), (ids, context, vocab) = files, text
    prompt = min(16, windows.shape[1] // 2)
    before = decode_predictions(OnnxCausalLM(src), windows, prompt)
    runner = OnnxCausalLM(dst)
    ppl = perplexity(runner.logits, ids, context, context // 2, ppl_batch(context, vocab)).ppl
    agree = float((decode_predictions(runner, windows, prompt) == before).mean())  # over before.size tokens
    delta = ppl / v.ppl - 1
    if delta > KV_PPL_GATE or agree < KV_AGREEMENT_GATE:
        raise ClidepError(
            f"export failed its KV-cache check: {v.file} with an {cache.precision} cache scores perplexity "
            f"{delta:+.2%} and picks {agree:.1%} of {before.size} next tokens of its fp32 cache (gates "
            f"+{KV_PPL_GATE:.1%}, {KV_AGREEMENT_GATE:.0%}): export with --kv fp32 or fp16"
        )
    measured = validate_export(reference, dst, atol=None, runner=runner)
    v.max_abs_logit_diff, v.greedy_match = measured["max_abs_logit_diff"], measured["greedy_match"]
    v.kv_cache = {**cache.record(), "fp32_cache_ppl": v.ppl, "ppl_delta": delta, "decode_agreement": agree}
    v.ppl = ppl
