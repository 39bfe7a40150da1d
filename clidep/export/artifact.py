"""``clidep export``: build a self-contained, validated ONNX artifact directory.

DIR holds ``model.onnx`` (fp32), optional quantised variants, the tokenizer files and
``manifest.json``. Everything is written into a temporary sibling directory and renamed into
place at the end, so an interrupted export never leaves a DIR that looks complete.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from clidep.errors import ClidepError
from clidep.export.config import ExportConfig
from clidep.options import resolve

# Measured on the reference teacher (32,768 WikiText-test tokens, context 512 / stride 256, fp32
# 46.9 MB): blocks int8 with embedding and head fp32 18.7 MB, +0.12% ppl; blocks, embedding and
# head int8 as separate copies 14.5 MB, +0.10%; one shared int8 embedding/head 12.4 MB, +0.27%;
# per-channel instead of per-tensor +0.1 MB for -0.03 points. The target is <= +2%, so the
# smallest file wins: everything int8, one shared embedding/head, per-tensor.
INT8_PER_CHANNEL = False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_artifact(model_path: str | Path, out: str | Path, config: ExportConfig | None = None, *,
                    overwrite: bool = False, **options) -> dict:
    """Export MODEL to ONNX in OUT, validate it against PyTorch, and add the precisions asked for.

    CONFIG (an ``ExportConfig``), or its fields as keywords (``int8=True, ppl_tokens=4096, ...``),
    says which variants. Every variant is compared with PyTorch (max |logit diff|, greedy match),
    scored by perplexity on the first PPL_TOKENS tokens of PPL_DATA (0: the whole text) against
    the fp32 export, and by greedy agreement with it (same argmax next token, teacher-forced, on
    up to 8 x 128 tokens). STATIC makes the int8 variant calibrated (QDQ) on CALIB_SAMPLES
    windows of DATA instead of dynamic. An existing OUT is replaced (OVERWRITE) only once the new
    artifact is complete.
    """
    from transformers import AutoConfig

    from clidep.export import quantize
    from clidep.compress.analyze import calibration_batch
    from clidep.files import check_output, free_space_check, make_temp_dir, swap_into_place, write_json
    from clidep.model.convert import load_model
    from clidep.data import load_tokenizer, read_text
    from clidep.data import tokenize_text
    from clidep.export.graph import export_onnx
    from clidep.quality.perplexity import perplexity
    from clidep.runtime.runner import OnnxCausalLM
    from clidep.export.validate import ValidationError, greedy_agreement, validate_export

    c = resolve(ExportConfig, config, options)
    int8, static, int4, fp16, ppl_tokens = c.int8 or c.static, c.static, c.int4, c.fp16, c.ppl_tokens
    out = check_output(Path(out), [model_path, c.data, c.ppl_data], overwrite=overwrite)
    model = load_model(model_path)
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    copies = 1 + 0.3 * int8 + 0.25 * int4 + 0.5 * fp16 + 1  # the variants, plus the optimiser's temporary graph
    free_space_check(out.parent, int(fp32_bytes * copies), "this export")
    tokenizer = load_tokenizer(model_path)
    context = min(model.config.n_positions, 1024)
    stride = context // 2
    text, label = read_text(c.ppl_data)
    ids = tokenize_text(tokenizer, text)
    ids = ids[: ppl_tokens + 1] if ppl_tokens else ids
    if ids.size < 2:
        raise ClidepError(f"--ppl-data {c.ppl_data} gives {ids.size} token(s): the perplexity check needs at least 2")
    n_agree = min(8, (ids.size - 1) // 128)
    agree_windows = ids[: n_agree * 128].reshape(n_agree, 128) if n_agree else ids[None, : ids.size]
    windows = calibration_batch(tokenizer, c.data, c.calib_samples, min(128, context), 0)[0].numpy() if static else None
    tmp = make_temp_dir(out)
    try:
        fp32 = tmp / "model.onnx"
        t0 = time.perf_counter()
        export_onnx(model, fp32, c.opset)
        try:
            check = validate_export(model, fp32)
        except ValidationError as exc:
            raise ClidepError(f"export failed validation: {exc}") from exc
        seconds = time.perf_counter() - t0
        optimized = {"applied": False, "fusions": {}, "reason": "--no-optimize"}
        if c.optimize:
            t0 = time.perf_counter()
            opt, fusions = quantize.optimize(fp32, tmp / "model.opt.onnx")
            try:
                check = validate_export(model, opt)
                opt.replace(fp32)
                optimized = {"applied": True, "fusions": fusions, "reason": "parity kept"}
                seconds += time.perf_counter() - t0
            except ValidationError as exc:
                opt.unlink()
                optimized = {"applied": False, "fusions": fusions, "reason": f"parity lost, kept unoptimised: {exc}"}
        tokenizer.save_pretrained(tmp)
        # The source's own config (GPT-2's for a plain GPT-2) lets the ecosystem's clients, such as
        # optimum's ORTModelForCausalLM, open the directory as they would their own export.
        AutoConfig.from_pretrained(model_path).save_pretrained(tmp)

        def score(path: Path, precision: str, secs: float, strict: bool, **extra) -> dict:
            measured = check if strict else validate_export(model, path, atol=None)
            v_ppl = perplexity(OnnxCausalLM(path).logits, ids, context, stride, 4).ppl
            return {"file": path.name, "precision": precision, "seconds": round(secs, 2), **measured, "ppl": v_ppl,
                    "greedy_agreement": 1.0 if strict else greedy_agreement(fp32, path, agree_windows), **extra}

        variants = [score(fp32, "fp32", seconds, True)]
        jobs = []
        if int8 and static:
            jobs.append(("model.int8.onnx", "int8-static-qdq", lambda d: quantize.int8_static(fp32, d, windows, model.config.kv_shapes),
                         {"calibration": {"data": c.data, "samples": c.calib_samples}}))
        elif int8:
            jobs.append(("model.int8.onnx", "int8-dynamic", lambda d: quantize.int8_dynamic(fp32, d, INT8_PER_CHANNEL),
                         {"per_channel": INT8_PER_CHANNEL, "embedding_and_lm_head": "int8, one shared copy"}))
        if int4:
            jobs.append(("model.int4.onnx", "int4-weight-only", lambda d: quantize.int4_weight_only(fp32, d, c.block_size),
                         {"block_size": c.block_size}))
        if fp16:
            jobs.append(("model.fp16.onnx", "fp16", lambda d: quantize.fp16(fp32, d), {}))
        for name, precision, make, extra in jobs:
            t0 = time.perf_counter()
            result = make(tmp / name)
            if isinstance(result, tuple):  # int4 also reports its coverage
                extra = {**extra, "linear_layers_quantized": f"{result[1]}/{result[2]}"}
            variants.append(score(tmp / name, precision, time.perf_counter() - t0, False, **extra))
        for v in variants:
            v["ppl_delta"] = v["ppl"] / variants[0]["ppl"] - 1
            v["size_bytes"] = (tmp / v["file"]).stat().st_size
            v["sha256"] = _sha256(tmp / v["file"])
        manifest = {
            "source": str(model_path),
            "model_type": model.config.model_type,
            "layer_widths": model.config.layer_widths,
            "kv_shapes": [list(s) for s in model.config.kv_shapes],
            "opset": c.opset,
            "optimize": optimized,
            "ppl_protocol": {"data": label, "tokens": int(ids.size - 1), "context": context, "stride": stride},
            "variants": variants,
        }
        write_json(tmp / "manifest.json", manifest)
        swap_into_place(tmp, out)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
