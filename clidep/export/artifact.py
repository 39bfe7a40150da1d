"""``clidep export``: build a self-contained, validated ONNX artifact directory.

DIR holds ``model.onnx`` (fp32), optional quantised variants, the tokenizer files and
``manifest.json``. Everything is written into a temporary sibling directory and renamed into
place at the end, so an interrupted export never leaves a DIR that looks complete.
"""

from __future__ import annotations

import time
from pathlib import Path

from clidep.errors import ClidepError
from clidep.export.config import INT8_BLOCK, ORT_GRAPH_OPSET, ExportConfig
from clidep.options import resolve
from clidep.runtime import onnx_io
from clidep.runtime.verify import file_sha256, graph_bytes

# Measured on the reference teacher (32,768 WikiText-test tokens, context 512 / stride 256, fp32
# 46.9 MB): blocks int8 with embedding and head fp32 18.7 MB, +0.12% ppl; blocks, embedding and
# head int8 as separate copies 14.5 MB, +0.10%; one shared int8 embedding/head 12.4 MB, +0.27%;
# per-channel instead of per-tensor +0.1 MB for -0.03 points. The target is <= +2%, so the
# smallest file wins: everything int8, one shared embedding/head, per-tensor.
INT8_PER_CHANNEL = False


def export_artifact(model_path: str | Path, out: str | Path, config: ExportConfig | None = None, *,
                    overwrite: bool = False, log=None, **options) -> dict:
    """Export MODEL to ONNX in OUT, validate it against PyTorch, and add the precisions asked for.

    CONFIG (an ``ExportConfig``), or its fields as keywords (``int8=True, ppl_tokens=4096, ...``),
    says which variants. Every variant is compared with PyTorch (max |logit diff|, greedy match),
    scored by perplexity on the first PPL_TOKENS tokens of PPL_DATA (0: the whole text) against
    the fp32 export, and by greedy agreement with it (same argmax next token, teacher-forced, on
    up to 8 x 128 tokens). STATIC makes the int8 variant calibrated (QDQ) on CALIB_SAMPLES
    windows of DATA instead of dynamic. An existing OUT is replaced (OVERWRITE) only once the new
    artifact is complete; OUT is locked against other writers and readers meanwhile (LOG hears of
    leftovers of interrupted runs removed beside it).
    """
    from clidep.locks import write_lock

    c = resolve(ExportConfig, config, options)
    if c.check_arm:
        from clidep.export.arm import launchers

        launchers()  # before any work: the emulated environment exists
    with write_lock(Path(out), log):
        return _export(model_path, Path(out), c, overwrite, log or (lambda m: None))


# About a screen: the export's sequence (check, load, graph, variants, manifest) written once, into a
# directory that write_dir swaps in whole; each step is a helper below.
def _export(model_path: str | Path, out: Path, c: ExportConfig, overwrite: bool, log) -> dict:
    """export_artifact's work, with OUT's lock held."""
    from transformers import AutoConfig

    from clidep.data import calibration_batch, load_tokenizer
    from clidep.export.validate import greedy_agreement, validate_export
    from clidep.files import check_output, free_space_check, write_dir, write_json
    from clidep.model.convert import load_model
    from clidep.quality.perplexity import perplexity
    from clidep.runtime.machine import where
    from clidep.runtime.runner import OnnxCausalLM

    out = check_output(out, [model_path, c.data, c.ppl_data], overwrite=overwrite)
    model = load_model(model_path)
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    copies = 1 + 0.3 * (c.int8 or c.static) + 0.25 * c.int4 + 0.5 * c.fp16 + 1  # the variants, plus the optimiser's temporary graph
    free_space_check(out.parent, int(fp32_bytes * copies), "this export")
    tokenizer = load_tokenizer(model_path)
    context = min(model.config.n_positions, 1024)
    ids, label = _ppl_ids(tokenizer, c)
    n_agree = min(8, (ids.size - 1) // 128)
    agree_windows = ids[: n_agree * 128].reshape(n_agree, 128) if n_agree else ids[None, : ids.size]
    windows = calibration_batch(tokenizer, c.data, c.calib_samples, min(128, context), 0)[0].numpy() if c.static else None

    def build(tmp: Path) -> dict:
        fp32, check, seconds, optimized = _fp32_graph(model, tmp, c)
        tokenizer.save_pretrained(tmp)
        # The source's own config (GPT-2's for a plain GPT-2) lets the ecosystem's clients, such as
        # optimum's ORTModelForCausalLM, open the directory as they would their own export.
        AutoConfig.from_pretrained(model_path).save_pretrained(tmp)

        def score(path: Path, precision: str, secs: float, strict: bool, **extra) -> dict:
            measured = check if strict else validate_export(model, path, atol=None)
            runner = OnnxCausalLM(path)
            v_ppl = perplexity(runner.logits, ids, context, context // 2, 4).ppl
            return {"file": path.name, "precision": precision, "seconds": round(secs, 2), **measured, "ppl": v_ppl,
                    "greedy_agreement": 1.0 if strict else greedy_agreement(fp32, path, agree_windows),
                    "kv_layout": onnx_io.SHARED_BUFFER if runner.shared else "growing",
                    "graph_kv_shapes": [list(k) for k in runner.kv_shapes], "max_length": runner.max_length,
                    "vocab_size": runner.session.get_outputs()[0].shape[-1], **extra}

        variants = [score(fp32, "fp32", seconds, True)]
        for name, precision, make, extra in _quantised_jobs(c, fp32, model, windows):
            t0 = time.perf_counter()
            result = make(tmp / name)
            if isinstance(result, tuple):  # int4 also reports its coverage
                extra = {**extra, "linear_layers_quantized": f"{result[1]}/{result[2]}"}
            variants.append(score(tmp / name, precision, time.perf_counter() - t0, False, **extra))
        for v in variants:
            v["ppl_delta"] = v["ppl"] / variants[0]["ppl"] - 1
            data = tmp / f"{v['file']}.data"  # weights past 2 GB live beside the graph
            v["size_bytes"] = graph_bytes(tmp / v["file"])
            v["sha256"] = file_sha256(tmp / v["file"])
            if data.exists():
                v["external_data"] = {"file": data.name, "sha256": file_sha256(data)}
        manifest = {
            "source": str(model_path), "model_type": model.config.model_type,
            "layer_widths": model.config.layer_widths, "kv_shapes": [list(s) for s in model.config.kv_shapes],
            "opset": c.opset if c.plain_onnx else ORT_GRAPH_OPSET, "optimize": optimized,
            "ppl_protocol": {"data": label, "tokens": int(ids.size - 1), "context": context, "stride": context // 2},
            "variants": variants, "measured_on": where(),
        }
        if c.genai:
            from clidep.export.genai import write_folders

            manifest["genai"] = write_folders(tmp, model.config, variants)
        if c.check_arm:
            manifest["aarch64"] = _arm_checked(tmp, manifest, ids, context, log)
        write_json(tmp / "manifest.json", manifest)
        return manifest

    return write_dir(out, build)


def _arm_checked(tmp: Path, manifest: dict, ids, context: int, log) -> dict:
    """The manifest's aarch64 record (export/arm.py); ClidepError listing every variant and core that
    missed a gate there."""
    from clidep.export.arm import check_arm, refusals

    record = check_arm(tmp, manifest["variants"], manifest.get("genai", {}), ids, context, log)
    misses = refusals(record)
    if misses:
        raise ClidepError("export failed its aarch64 check, so these files would not give on ARM what they give here: "
                          + "; ".join(misses))
    return record


def _ppl_ids(tokenizer, c: ExportConfig):
    """(token ids, label) of the perplexity check: the first PPL_TOKENS + 1 tokens of PPL_DATA (0: all)."""
    from clidep.data import read_text, tokenize_text

    text, label = read_text(c.ppl_data)
    ids = tokenize_text(tokenizer, text)
    ids = ids[: c.ppl_tokens + 1] if c.ppl_tokens else ids
    if ids.size < 2:
        raise ClidepError(f"--ppl-data {c.ppl_data} gives {ids.size} token(s): the perplexity check needs at least 2")
    return ids, label


def _fp32_graph(model, tmp: Path, c: ExportConfig) -> tuple[Path, dict, float, dict]:
    """Write the fp32 graph (the ONNX Runtime graph, or with --plain-onnx the traced one, fused by
    --optimize where parity holds) and validate it (fatal): (path, parity, seconds, optimize record)."""
    from clidep.export import traced_quantize
    from clidep.export.ort_graph import export_ort_graph
    from clidep.export.traced_graph import export_onnx

    fp32 = tmp / "model.onnx"
    t0 = time.perf_counter()
    if not c.plain_onnx:
        export_ort_graph(model, fp32)
        check = _validated(model, fp32)
        return fp32, check, time.perf_counter() - t0, {"applied": False, "fusions": {},
                                                       "reason": "the ONNX Runtime graph is written fused"}
    export_onnx(model, fp32, c.opset)
    check = _validated(model, fp32)
    seconds = time.perf_counter() - t0
    if not c.optimize:
        return fp32, check, seconds, {"applied": False, "fusions": {}, "reason": "--no-optimize"}
    t0 = time.perf_counter()
    opt, fusions = traced_quantize.optimize(fp32, tmp / "model.opt.onnx")
    try:
        check = _validated(model, opt)
    except ClidepError as exc:
        opt.unlink()
        return fp32, check, seconds, {"applied": False, "fusions": fusions, "reason": f"parity lost, kept unoptimised: {exc}"}
    opt.replace(fp32)
    return fp32, check, seconds + time.perf_counter() - t0, {"applied": True, "fusions": fusions, "reason": "parity kept"}


def _validated(model, path: Path) -> dict:
    """validate_export's record; its typed failure as a ClidepError (export stops)."""
    from clidep.export.validate import ValidationError, validate_export

    try:
        return validate_export(model, path)
    except ValidationError as exc:
        raise ClidepError(f"export failed validation: {exc}") from exc


def _quantised_jobs(c: ExportConfig, fp32: Path, model, windows) -> list[tuple]:
    """(file, precision, make(dst), manifest extras) of each variant asked for beside fp32."""
    from clidep.export import traced_quantize
    from clidep.export.ort_graph import write_quantised

    jobs = []
    if c.static:  # calibrated QDQ is for runtimes without contrib ops: it starts from the traced graph
        jobs.append(("model.int8.onnx", "int8-static-qdq", lambda d: _static(model, d, windows),
                     {"calibration": {"data": c.data, "samples": c.calib_samples}}))
    elif c.int8 and c.plain_onnx:
        jobs.append(("model.int8.onnx", "int8-dynamic", lambda d: traced_quantize.int8_dynamic(fp32, d, INT8_PER_CHANNEL),
                     {"per_channel": INT8_PER_CHANNEL, "embedding_and_lm_head": "int8, one shared copy"}))
    elif c.int8:
        jobs.append(("model.int8.onnx", "int8-weight-only", lambda d: write_quantised(model, d, 8, INT8_BLOCK),
                     {"block_size": INT8_BLOCK, "embedding_and_lm_head": "one 8-bit table, read in place"}))
    if c.int4 and c.plain_onnx:
        jobs.append(("model.int4.onnx", "int4-weight-only", lambda d: traced_quantize.int4_weight_only(fp32, d, c.block_size),
                     {"block_size": c.block_size}))
    elif c.int4:
        jobs.append(("model.int4.onnx", "int4-weight-only", lambda d: write_quantised(model, d, 4, c.block_size),
                     {"block_size": c.block_size, "embedding_and_lm_head": "one 4-bit table, read in place"}))
    if c.fp16:
        jobs.append(("model.fp16.onnx", "fp16", lambda d: traced_quantize.fp16(fp32, d), {}))
    return jobs


def _static(model, dst: Path, windows) -> Path:
    """Calibrated QDQ int8 at DST, quantised from the traced fp32 graph (written to a scratch folder beside DST)."""
    import tempfile

    from clidep.export import traced_quantize
    from clidep.export.traced_graph import export_onnx

    with tempfile.TemporaryDirectory(dir=dst.parent) as scratch:
        traced = export_onnx(model, Path(scratch) / "model.onnx")
        return traced_quantize.int8_static(traced, dst, windows, model.config.kv_shapes)
