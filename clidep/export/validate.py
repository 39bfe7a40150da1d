"""Validation of an exported graph against its PyTorch model; callable on its own after any export.

Checks go from cheap to expensive and raise typed errors in that order: I/O names, then
output shapes, then values (max |logit diff| on batch 1 and a left-padded batch 2, at past
length 0 and > 0), then 32-token greedy continuations, which may part from PyTorch's at a near-tie only
(greedy_flip: PyTorch's margin between the two tokens within twice the graph's largest logit difference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clidep.errors import NamesMismatch, ShapeMismatch, ValueMismatch
from clidep.runtime import onnx_io


@dataclass
class Reference:
    """What the PyTorch model computes for the checks, so that graphs can be checked after it is freed:
    the logits of each case (ids, mask, positions, split) and a greedy continuation of PROMPT."""

    n_layer: int
    kv_shapes: list[tuple[int, int]]  # the model's own (head sizes unpadded)
    graph_kv_shapes: list[tuple[int, int]]  # as the ONNX Runtime graph stores them
    cases: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    prompt: np.ndarray | None = None
    greedy: np.ndarray | None = None  # (1, P + N): PROMPT and PyTorch's greedy continuation of it
    greedy_logits: np.ndarray | None = None  # (N, V): PyTorch's logits before each continuation token


def torch_reference(model, greedy_tokens: int = 32, seed: int = 0) -> Reference:
    """MODEL's (fp32 torch) logits on batch 1 and a left-padded batch 2 of 12 random tokens, and its
    GREEDY_TOKENS-token greedy continuation of 8 more."""
    import torch

    from clidep.export.ort_graph import graph_kv_shapes

    rng = np.random.default_rng(seed)
    ref = Reference(model.config.n_layer, list(model.config.kv_shapes), graph_kv_shapes(model.config))
    for batch, pad in ((1, 0), (2, 3)):
        ids = rng.integers(1, model.config.vocab_size, (batch, 12))
        mask = np.ones_like(ids)
        mask[-1, :pad] = 0  # the last row is left-padded
        pos = onnx_io.left_pad_positions(mask)
        with torch.no_grad():
            logits = model(
                torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                position_ids=torch.from_numpy(pos),
                use_cache=False,
            ).logits.numpy()  # (B, 12, V)
        for split in (12, 8):  # past length 0, then 8 tokens of past and 4 new
            ref.cases.append((ids, mask, pos, split, logits))
    ref.prompt = rng.integers(1, model.config.vocab_size, (1, 8))
    with torch.no_grad():
        ref.greedy = model.generate(
            torch.from_numpy(ref.prompt),
            attention_mask=torch.ones(ref.prompt.shape, dtype=torch.long),
            max_new_tokens=greedy_tokens,
            min_new_tokens=greedy_tokens,
            do_sample=False,
            pad_token_id=0,
        ).numpy()
        continuation = model(torch.from_numpy(ref.greedy[:, :-1]), use_cache=False).logits[0, ref.prompt.shape[1] - 1 :]
        ref.greedy_logits = continuation.float().numpy()
    return ref


def greedy_flip(
    got: np.ndarray, greedy: np.ndarray, prompt_len: int, logits: np.ndarray | None, logit_diff: float, runtime: str
) -> dict | None:
    """Where a file's greedy continuation GOT (1, P + N) first leaves PyTorch's GREEDY (1, P + N) of a prompt of
    PROMPT_LEN tokens: the position in the continuation, both tokens (the file's under the key RUNTIME), PyTorch's
    margin between them (from LOGITS, (N, V), its logits before each continuation token) and the margin a file
    whose logits move by LOGIT_DIFF can swap (twice it: each of the two may move by that much); None where the
    continuations are equal."""
    differ = np.flatnonzero(got[0] != greedy[0])
    if differ.size == 0:
        return None
    at = int(differ[0])
    mine, theirs = int(greedy[0, at]), int(got[0, at])
    step = at - prompt_len
    row = logits[step] if logits is not None else None
    return {
        "token": step,
        "pytorch": mine,
        runtime: theirs,
        "pytorch_margin": float(row[mine] - row[theirs]) if row is not None else float("inf"),
        "allowed_margin": 2 * logit_diff,
    }


def near_tie(flip: dict | None) -> bool:
    """Whether FLIP (greedy_flip's record) is no flip, or one at a near-tie: PyTorch's margin within the allowed."""
    return flip is None or flip["pytorch_margin"] <= flip["allowed_margin"]


def validate_export(
    model, onnx_path: str | Path, atol: float | None = 1e-4, greedy_tokens: int = 32, seed: int = 0, runner=None
) -> dict:
    """Compare ``onnx_path`` with ``model`` (fp32 torch, or its ``Reference``); return ``{"max_abs_logit_diff",
    "greedy_match"}``. RUNNER: that file's OnnxCausalLM where the caller has one open.

    Names and shapes must always match. With ``atol=None`` (quantised variants, which are not
    expected to match exactly) value differences are measured and returned instead of raised.
    """
    from clidep.runtime.runner import OnnxCausalLM

    ref = model if isinstance(model, Reference) else torch_reference(model, greedy_tokens, seed)
    runner = runner or OnnxCausalLM(onnx_path)
    n = ref.n_layer
    got_in = [i.name for i in runner.session.get_inputs()]
    got_out = runner.output_names
    if got_in != onnx_io.input_names(n) or got_out != onnx_io.output_names(n):
        raise NamesMismatch(f"graph I/O {got_in} -> {got_out} differs from the clidep decoder layout for {n} blocks")
    expected = ref.graph_kv_shapes if runner.shared else ref.kv_shapes
    if runner.kv_shapes != expected:
        raise ShapeMismatch(f"metadata KV shapes {runner.kv_shapes} differ from the model's {expected}")

    worst = 0.0
    for ids, mask, pos, split, logits_ref in ref.cases:
        batch = ids.shape[0]
        past = runner.empty_past(batch)
        if split < 12:
            _, past = runner.forward(ids[:, :split], mask[:, :split], pos[:, :split], past)
        start = 0 if split == 12 else split
        logits, present = runner.forward(ids[:, start:], mask, pos[:, start:], past)
        if logits.shape != logits_ref[:, start:].shape:
            raise ShapeMismatch(
                f"logits {logits.shape}, expected {logits_ref[:, start:].shape} (batch {batch}, past {start})"
            )
        for (h, d), k in zip(runner.kv_shapes, runner.present_shapes(present)[::2]):
            if k != (batch, h, 12, d):
                raise ShapeMismatch(f"present key {k}, expected {(batch, h, 12, d)}")
        valid = mask[:, start:].astype(bool)
        worst = max(worst, float(np.abs(logits.astype(np.float32) - logits_ref[:, start:])[valid].max()))
    if atol is not None and worst > atol:
        raise ValueMismatch(f"max |logit diff| {worst:.3g} exceeds {atol:g} against PyTorch")

    p = ref.prompt.shape[1]
    got = runner.generate(ref.prompt, max_new_tokens=ref.greedy.shape[1] - p)
    flip = greedy_flip(got, ref.greedy, p, ref.greedy_logits, worst, "onnxruntime")
    if atol is not None and not near_tie(flip):
        raise ValueMismatch(
            f"greedy continuation differs from PyTorch: {got[0, p:].tolist()} vs {ref.greedy[0, p:].tolist()} "
            f"at its token {flip['token']}, where PyTorch's margin is {flip['pytorch_margin']:.3g} (a near-tie is at "
            f"most {flip['allowed_margin']:.3g}: twice the largest logit difference)"
        )
    return {"max_abs_logit_diff": worst, "greedy_match": flip is None, **({"greedy_flip": flip} if flip else {})}


def log_probs(runner, windows: np.ndarray) -> np.ndarray:
    """(N * L, V) float32 next-token log-probabilities RUNNER gives at every position of WINDOWS (N, L),
    teacher-forced, a window at a time (one window's float64 logits held at once)."""
    from clidep.perplexity import logsumexp

    out = []
    for w in np.asarray(windows):
        z = runner.logits(w[None])[0].astype(np.float64)
        out.append((z - logsumexp(z)).astype(np.float32))
    return np.concatenate(out)


def next_tokens(runner, windows: np.ndarray) -> np.ndarray:
    """The token RUNNER (an OnnxCausalLM) picks next at every position of WINDOWS (N, L), teacher-forced; a
    window at a time, so that only one window's logits are held (8 x 128 x 50,257 at once took 206 MB)."""
    return np.concatenate([runner.logits(w[None]).argmax(-1) for w in np.asarray(windows)])


def greedy_agreement(reference: str | Path, candidate: str | Path, windows: np.ndarray) -> float:
    """Share of positions in ``windows`` (N, L) where both graphs pick the same next token (teacher-forced argmax).

    Teacher forcing keeps one early disagreement from counting against every later token, as
    free-running continuations would.
    """
    from clidep.runtime.runner import OnnxCausalLM

    return float(
        (next_tokens(OnnxCausalLM(reference), windows) == next_tokens(OnnxCausalLM(candidate), windows)).mean()
    )
