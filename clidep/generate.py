"""``clidep generate``: text in, text out, through the torch-free ONNX runner."""

from __future__ import annotations

from pathlib import Path

from .errors import ClidepError


def generate_text(artifact: str | Path, prompt: str, max_new_tokens: int = 32, temperature: float = 0.0,
                  top_k: int = 0, seed: int = 0) -> str:
    """Continue PROMPT with the ONNX model at ARTIFACT (a directory's model.onnx, or an .onnx file in one)."""
    import numpy as np
    from tokenizers import Tokenizer

    from .runner import OnnxCausalLM

    path = Path(artifact)
    onnx_file = path / "model.onnx" if path.is_dir() else path
    folder = onnx_file.parent
    if not onnx_file.is_file():
        raise ClidepError(f"no ONNX model at '{onnx_file}'; give a directory made by clidep export")
    if not (folder / "tokenizer.json").is_file():
        raise ClidepError(f"no tokenizer.json beside '{onnx_file}'; re-run clidep export")
    if max_new_tokens < 1:
        raise ClidepError("--max-new-tokens must be at least 1")
    try:
        runner = OnnxCausalLM(onnx_file)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types for bad files
        raise ClidepError(f"cannot load '{onnx_file}' with ONNX Runtime: {str(exc).splitlines()[0]}") from exc
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = tokenizer.encode(prompt).ids
    if not ids:
        raise ClidepError("--prompt is empty")
    out = runner.generate(np.array([ids]), max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
    return prompt + tokenizer.decode(out[0, len(ids):].tolist())
