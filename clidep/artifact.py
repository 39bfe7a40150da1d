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

from .errors import ClidepError

# Measured on the reference teacher (16,384 WikiText-test tokens, context 256 / stride 128):
# per-tensor and per-channel int8 both stay within 0.04% of fp32 perplexity; excluding the tied
# LM head keeps the file 10% smaller (the quantiser would add an int8 copy of wte^T beside the
# fp32 wte that the embedding Gather still needs) at +0.008%. Hence per-tensor, head excluded.
INT8_PER_CHANNEL = False
INT8_EXCLUDE_LM_HEAD = True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_artifact(
    model_path: str | Path, out: str | Path, int8: bool = False, opset: int = 17, overwrite: bool = False,
    data: str = "wikitext-test", ppl_tokens: int = 32768, context: int | None = None,
) -> dict:
    """Export MODEL to ONNX in OUT, validate it against PyTorch, optionally add an int8 variant.

    Quantised variants are scored by perplexity on the first PPL_TOKENS tokens of DATA (0: the
    whole text) against the fp32 export, and by greedy agreement with it.
    """
    import numpy as np

    from .convert import load_model
    from .data import load_tokenizer, read_text
    from .evaluate import tokenize_text
    from .export import export_onnx
    from .perplexity import perplexity
    from .quantize import int8_dynamic
    from .runner import OnnxCausalLM
    from .validate import ValidationError, greedy_agreement, validate_export
    from .artifacts import make_temp_dir, write_json

    out = Path(out)
    if out.exists() and not overwrite:
        raise ClidepError(f"'{out}' exists; pass --overwrite to replace it")
    model = load_model(model_path)
    tokenizer = load_tokenizer(model_path)
    context = context or min(model.config.n_positions, 1024)
    tmp = make_temp_dir(out)
    try:
        t0 = time.perf_counter()
        fp32 = export_onnx(model, tmp / "model.onnx", opset)
        export_s = time.perf_counter() - t0
        try:
            check = validate_export(model, fp32)
        except ValidationError as exc:
            raise ClidepError(f"export failed validation: {exc}") from exc
        tokenizer.save_pretrained(tmp)
        text, label = read_text(data)
        ids = tokenize_text(tokenizer, text)
        ids = ids[:ppl_tokens] if ppl_tokens else ids
        stride = context // 2
        base_ppl = perplexity(OnnxCausalLM(fp32).logits, ids, context, stride, 4).ppl
        variants = [{"file": fp32.name, "precision": "fp32", "seconds": round(export_s, 2), **check,
                     "ppl": base_ppl, "ppl_delta": 0.0, "greedy_agreement": 1.0}]
        if int8:
            t0 = time.perf_counter()
            q = int8_dynamic(fp32, tmp / "model.int8.onnx", INT8_PER_CHANNEL, INT8_EXCLUDE_LM_HEAD)
            q_s = time.perf_counter() - t0
            q_ppl = perplexity(OnnxCausalLM(q).logits, ids, context, stride, 4).ppl
            prompts = np.random.default_rng(0).integers(1, model.config.vocab_size, (4, 8))
            variants.append({"file": q.name, "precision": "int8-dynamic", "seconds": round(q_s, 2),
                             "per_channel": INT8_PER_CHANNEL, "lm_head_quantized": not INT8_EXCLUDE_LM_HEAD,
                             "max_abs_logit_diff": None, "greedy_match": None,
                             "ppl": q_ppl, "ppl_delta": q_ppl / base_ppl - 1,
                             "greedy_agreement": greedy_agreement(fp32, q, prompts)})
        for v in variants:
            v["size_bytes"] = (tmp / v["file"]).stat().st_size
            v["sha256"] = _sha256(tmp / v["file"])
        manifest = {
            "source": str(model_path),
            "model_type": model.config.model_type,
            "layer_widths": model.config.layer_widths,
            "kv_shapes": [list(s) for s in model.config.kv_shapes],
            "opset": opset,
            "ppl_protocol": {"data": label, "tokens": int(ids.size - 1), "context": context, "stride": stride},
            "variants": variants,
        }
        write_json(tmp / "manifest.json", manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
