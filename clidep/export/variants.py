"""The graph files of an export: the fp32 graph (the ONNX Runtime graph, or the traced plain ONNX), validated
against PyTorch, and the quantised variants made from it (int8, int4, fp16, static int8)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clidep.errors import ClidepError, ValidationError
from clidep.export.config import ExportConfig
from clidep.hardware.kernels import INT8_BLOCK
from clidep.runtime.manifest import Variant

# Measured on the reference teacher (32,768 WikiText-test tokens, context 512 / stride 256, fp32
# 46.9 MB): blocks int8 with embedding and head fp32 18.7 MB, +0.12% ppl; blocks, embedding and
# head int8 as separate copies 14.5 MB, +0.10%; one shared int8 embedding/head 12.4 MB, +0.27%;
# per-channel instead of per-tensor +0.1 MB for -0.03 points. The target is <= +2%, so the
# smallest file wins: everything int8, one shared embedding/head, per-tensor.
INT8_PER_CHANNEL = False


@dataclass
class Fp32Graph:
    """The export's fp32 graph as written: where, its parity with PyTorch, and the optimiser's record."""

    path: Path  # the graph file
    check: dict | None  # validate_export's record; None: checked by the Scorer once the torch model is freed
    seconds: float  # wall time to write (and optimise) it
    optimize: dict  # {applied, fusions, reason}: the manifest's optimize record


@dataclass
class Job:
    """One quantised file an export writes beside the fp32 graph."""

    file: str  # its name in the export folder
    precision: str  # the manifest's precision label
    make: Callable[[Path], object]  # writes it at the path given (int4: returns (path, quantised, linear layers))
    details: dict  # its own settings, recorded in its manifest entry (block size, calibration, ...)
    takes_cache: bool  # the ONNX Runtime graph's files take --kv's cache format; the others keep their own
    seconds: float | None = None  # wall time to write it, once written


def write_files(model, reference, tmp: Path, c: ExportConfig, windows, log) -> tuple[Fp32Graph, list[Job]]:
    """Every file that needs the torch model: the fp32 graph and each variant asked for, each job with the
    time it took and (int4) its coverage."""
    fp32 = fp32_graph(model, reference, tmp, c)
    jobs = quantised_jobs(c, fp32.path, model, windows)
    for job in jobs:
        log(f"writing {job.file}")
        t0 = time.perf_counter()
        result = job.make(tmp / job.file)
        if isinstance(result, tuple):  # int4 also reports its coverage
            job.details = {**job.details, "linear_layers_quantized": f"{result[1]}/{result[2]}"}
        job.seconds = time.perf_counter() - t0
    return fp32, jobs


def fp32_graph(model, reference, tmp: Path, c: ExportConfig) -> Fp32Graph:
    """Write the fp32 graph (the ONNX Runtime graph, or with --plain-onnx the traced one, fused by
    --optimize where parity holds against REFERENCE, fatal). The ONNX Runtime graph's parity is checked
    once the torch model is freed."""
    from clidep.export import traced_quantize
    from clidep.export.ort_graph import export_ort_graph
    from clidep.export.traced_graph import export_onnx

    fp32 = tmp / "model.onnx"
    t0 = time.perf_counter()
    if not c.plain_onnx:
        export_ort_graph(model, fp32)
        fused = {"applied": False, "fusions": {}, "reason": "the ONNX Runtime graph is written fused"}
        return Fp32Graph(fp32, None, time.perf_counter() - t0, fused)
    export_onnx(model, fp32, c.opset)
    check = validated(reference, fp32)
    seconds = time.perf_counter() - t0
    if not c.optimize:
        return Fp32Graph(fp32, check, seconds, {"applied": False, "fusions": {}, "reason": "--no-optimize"})
    t0 = time.perf_counter()
    opt, fusions = traced_quantize.optimize(fp32, tmp / "model.opt.onnx")
    try:
        check = validated(reference, opt)
    except ClidepError as exc:
        opt.unlink()
        lost = {"applied": False, "fusions": fusions, "reason": f"parity lost, kept unoptimised: {exc}"}
        return Fp32Graph(fp32, check, seconds, lost)
    opt.replace(fp32)
    kept = {"applied": True, "fusions": fusions, "reason": "parity kept"}
    return Fp32Graph(fp32, check, seconds + time.perf_counter() - t0, kept)


def validated(reference, path: Path, runner=None) -> dict:
    """validate_export's record; its typed failure as a ClidepError (export stops)."""
    from clidep.export.validate import validate_export

    try:
        return validate_export(reference, path, runner=runner)
    except ValidationError as exc:
        raise ClidepError(f"export failed validation: {exc}") from exc


def quantised_jobs(c: ExportConfig, fp32: Path, model, windows) -> list[Job]:
    """The quantised files asked for beside fp32, in the order they are written and scored."""
    from clidep.export import traced_quantize
    from clidep.export.ort_graph import write_quantised

    jobs = []
    if c.static:  # calibrated QDQ is for runtimes without contrib ops: it starts from the traced graph
        calibration = {"calibration": {"data": c.data, "samples": c.calib_samples}}
        jobs.append(
            Job("model.int8.onnx", "int8-static-qdq", lambda d: static_int8(model, d, windows), calibration, False)
        )
    elif c.int8 and c.plain_onnx:
        jobs.append(
            Job(
                "model.int8.onnx",
                "int8-dynamic",
                lambda d: traced_quantize.int8_dynamic(fp32, d, INT8_PER_CHANNEL),
                {"per_channel": INT8_PER_CHANNEL, "embedding_and_lm_head": "int8, one shared copy"},
                False,
            )
        )
    elif c.int8:
        jobs.append(
            Job(
                "model.int8.onnx",
                "int8-weight-only",
                lambda d: write_quantised(model, d, 8, INT8_BLOCK),
                {"block_size": INT8_BLOCK, "embedding_and_lm_head": "one 8-bit table, read in place"},
                True,
            )
        )
    if c.int4 and c.plain_onnx:
        int4 = lambda d: traced_quantize.int4_weight_only(fp32, d, c.block_size)  # noqa: E731
        jobs.append(Job("model.int4.onnx", "int4-weight-only", int4, {"block_size": c.block_size}, False))
    elif c.int4:
        jobs.append(
            Job(
                "model.int4.onnx",
                "int4-weight-only",
                lambda d: write_quantised(model, d, 4, c.block_size, c.int4_table_bits, c.int4_eight_bit),
                {
                    "block_size": c.block_size,
                    "embedding_and_lm_head": f"one {c.int4_table_bits}-bit table, read in place",
                    "linear_layers_at_8_bits": list(c.int4_eight_bit),
                },
                True,
            )
        )
    if c.fp16:
        jobs.append(Job("model.fp16.onnx", "fp16", lambda d: traced_quantize.fp16(fp32, d), {}, False))
    return jobs


def static_int8(model, dst: Path, windows) -> Path:
    """Calibrated QDQ int8 at DST, quantised from the traced fp32 graph (written to a scratch folder beside DST)."""
    import tempfile

    from clidep.export import traced_quantize
    from clidep.export.traced_graph import export_onnx

    with tempfile.TemporaryDirectory(dir=dst.parent) as scratch:
        traced = export_onnx(model, Path(scratch) / "model.onnx")
        return traced_quantize.int8_static(traced, dst, windows, model.config.kv_shapes)


class Scorer:
    """Scores each file of an export on the check text, one ONNX Runtime session per file: parity with
    PyTorch's REFERENCE (the fp32 graph strictly, CHECK where writing it already measured it; the others
    as figures), perplexity on IDS (CONTEXT, BATCH windows), and next-token distributions on AGREE_WINDOWS
    against the fp32 graph's, which is scored first: top-1 agreement and KL divergence."""

    def __init__(self, reference, check: dict | None, ids, context: int, batch: int, agree_windows, log):
        self.reference, self.check, self.ids, self.context, self.batch = reference, check, ids, context, batch
        self.agree_windows, self.log = agree_windows, log
        self.fp32_answers = None

    def __call__(self, path: Path, precision: str, secs: float, strict: bool, details: dict) -> Variant:
        from clidep.export.validate import log_probs, validate_export
        from clidep.perplexity import kl_divergence, perplexity
        from clidep.runtime import onnx_io
        from clidep.runtime.runner import OnnxCausalLM

        self.log(f"{path.name}: written in {secs:.0f} s; checking it (perplexity on {self.ids.size - 1:,} tokens)")
        # Unpacked fp32 weights: ONNX Runtime's prepacked copy doubled the fp32 graph's memory (615 -> 1,030 MB
        # for a 551 MB graph) for 3% of its prefill; the quantised kernels need theirs (prefill 1.5x slower without).
        runner = OnnxCausalLM(path, prepack=not strict)
        if strict:
            measured = self.check or validated(self.reference, path, runner)
        else:
            measured = validate_export(self.reference, path, atol=None, runner=runner)
        ppl = perplexity(runner.logits, self.ids, self.context, self.context // 2, self.batch).ppl
        answers = log_probs(runner, self.agree_windows)  # (positions, V): 8 x 128 x 50,257 holds 206 MB
        if strict:
            self.fp32_answers = answers
        kld = kl_divergence(self.fp32_answers, answers)
        return Variant(
            file=path.name,
            precision=precision,
            seconds=round(secs, 2),
            max_abs_logit_diff=measured["max_abs_logit_diff"],
            greedy_match=measured["greedy_match"],
            greedy_flip=measured.get("greedy_flip"),
            ppl=ppl,
            greedy_agreement=float((answers.argmax(-1) == self.fp32_answers.argmax(-1)).mean()),
            kld_mean=float(kld.mean()),
            kld_p99=float(np.percentile(kld, 99)),
            kv_layout=onnx_io.SHARED_BUFFER if runner.shared else "growing",
            kv_cache={"precision": runner.cache_precision},
            graph_kv_shapes=[list(k) for k in runner.kv_shapes],
            max_length=runner.max_length,
            vocab_size=runner.session.get_outputs()[0].shape[-1],
            extra=details,
        )
