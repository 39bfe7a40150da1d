"""Validation of an exported graph against its PyTorch model; callable on its own after any export.

Checks go from cheap to expensive and raise typed errors in that order: I/O names, then
output shapes, then values (max |logit diff| on batch 1 and a left-padded batch 2, at past
length 0 and > 0), then 32-token greedy continuations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clidep.runtime import onnx_io


class ValidationError(Exception):
    """The exported graph does not behave like the model it came from."""


class NamesMismatch(ValidationError):
    pass


class ShapeMismatch(ValidationError):
    pass


class ValueMismatch(ValidationError):
    pass


def validate_export(model, onnx_path: str | Path, atol: float | None = 1e-4, greedy_tokens: int = 32, seed: int = 0) -> dict:
    """Compare ``onnx_path`` with ``model`` (fp32 torch); return ``{"max_abs_logit_diff", "greedy_match"}``.

    Names and shapes must always match. With ``atol=None`` (quantised variants, which are not
    expected to match exactly) value differences are measured and returned instead of raised.
    """
    import torch

    from clidep.runtime.runner import OnnxCausalLM

    runner = OnnxCausalLM(onnx_path)
    n = model.config.n_layer
    got_in = [i.name for i in runner.session.get_inputs()]
    got_out = runner.output_names
    if got_in != onnx_io.input_names(n) or got_out != onnx_io.output_names(n):
        raise NamesMismatch(f"graph I/O {got_in} -> {got_out} differs from the clidep decoder layout for {n} blocks")
    from clidep.export.ort_graph import graph_kv_shapes

    expected = graph_kv_shapes(model.config) if runner.shared else model.config.kv_shapes
    if runner.kv_shapes != expected:
        raise ShapeMismatch(f"metadata KV shapes {runner.kv_shapes} differ from the model's {expected}")

    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch, pad in ((1, 0), (2, 3)):
        ids = rng.integers(1, model.config.vocab_size, (batch, 12))
        mask = np.ones_like(ids)
        mask[-1, :pad] = 0  # the last row is left-padded
        pos = onnx_io.left_pad_positions(mask)
        for split in (12, 8):  # past length 0, then 8 tokens of past and 4 new
            with torch.no_grad():
                ref = model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                            position_ids=torch.from_numpy(pos), use_cache=False).logits.numpy()  # (B, 12, V)
            past = runner.empty_past(batch)
            if split < 12:
                _, past = runner.forward(ids[:, :split], mask[:, :split], pos[:, :split], past)
            start = 0 if split == 12 else split
            logits, present = runner.forward(ids[:, start:], mask, pos[:, start:], past)
            if logits.shape != ref[:, start:].shape:
                raise ShapeMismatch(f"logits {logits.shape}, expected {ref[:, start:].shape} (batch {batch}, past {start})")
            for (h, d), k in zip(runner.kv_shapes, runner.present_shapes(present)[::2]):
                if k != (batch, h, 12, d):
                    raise ShapeMismatch(f"present key {k}, expected {(batch, h, 12, d)}")
            valid = mask[:, start:].astype(bool)
            diff = float(np.abs(logits.astype(np.float32) - ref[:, start:])[valid].max())
            worst = max(worst, diff)
    if atol is not None and worst > atol:
        raise ValueMismatch(f"max |logit diff| {worst:.3g} exceeds {atol:g} against PyTorch")

    prompt = rng.integers(1, model.config.vocab_size, (1, 8))
    with torch.no_grad():
        expected = model.generate(torch.from_numpy(prompt), attention_mask=torch.ones(1, 8, dtype=torch.long),
                                  max_new_tokens=greedy_tokens, min_new_tokens=greedy_tokens, do_sample=False,
                                  pad_token_id=0).numpy()
    got = runner.generate(prompt, max_new_tokens=greedy_tokens)
    match = bool(np.array_equal(got, expected))
    if atol is not None and not match:
        raise ValueMismatch(f"greedy continuation differs from PyTorch: {got[0, 8:].tolist()} vs {expected[0, 8:].tolist()}")
    return {"max_abs_logit_diff": worst, "greedy_match": match}


def greedy_agreement(reference: str | Path, candidate: str | Path, windows: np.ndarray) -> float:
    """Share of positions in ``windows`` (N, L) where both graphs pick the same next token (teacher-forced argmax).

    Teacher forcing keeps one early disagreement from counting against every later token, as
    free-running continuations would.
    """
    from clidep.runtime.runner import OnnxCausalLM

    a = OnnxCausalLM(reference).logits(windows).argmax(-1)
    b = OnnxCausalLM(candidate).logits(windows).argmax(-1)
    return float((a == b).mean())
