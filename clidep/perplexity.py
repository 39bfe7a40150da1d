"""The one perplexity function clidep uses, for torch and ONNX models alike.

Protocol (``../shared/docs/measuring.md``): the whole text is tokenised once; windows of
``context`` tokens start every ``stride`` tokens; each window scores only the tokens no earlier
window scored, so every token after the first is scored exactly once, with at least
``context - stride`` tokens of history once the first window is past. ppl = exp(mean NLL).

The scoring backend is a function ``logits_fn(ids) -> logits`` on numpy arrays
(int64 (B, T) -> float (B, T, V)), so this module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

LogitsFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class PerplexityResult:
    ppl: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # tokens scored
    context: int
    stride: int
    data: str

    def to_dict(self) -> dict:
        return asdict(self)


def windows(n_tokens: int, context: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window; scored positions tile 1..n-1 exactly once."""
    # stride < context keeps at least one token of history before every scored token.
    if not 0 < stride < context:
        raise ValueError(f"stride must be in 1..{context - 1} (below the context {context}), got {stride}")
    scored_until = 1  # position 0 has no history and is never scored
    begin = 0
    while scored_until < n_tokens:
        end = min(begin + context, n_tokens)
        yield begin, end, scored_until
        scored_until = end
        begin += stride


# Positions scored in float64 at a time: a GPT-2 window's logits (1,024 x 50,257) in float64 at once
# took 412 MB beside the model's own 206 MB fp32 copy.
_CHUNK = 128
#: Bytes of fp32 logits one batch of windows may take (ppl_batch): 4 windows of the reference teacher
#: (512 x 8,192) take 67 MB; at GPT-2's 1,024 x 50,257 one window takes 206 MB, and 4 took 823 MB.
LOGITS_BUDGET = 256 * 2**20


def ppl_batch(context: int, vocab: int, most: int = 4, budget: int = LOGITS_BUDGET) -> int:
    """How many windows of CONTEXT tokens to score at once: MOST, fewer where their fp32 logits over a
    VOCAB-sized vocabulary would pass BUDGET bytes (never fewer than one)."""
    return max(1, min(most, budget // (4 * context * vocab)))


def scored_logits(
    logits_fn: LogitsFn, ids: np.ndarray, context: int, stride: int, batch_size: int = 4
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(logits, targets) of every scored token of IDS (1-D) under the sliding-window protocol, a chunk at a
    time: logits (n, V) float64 at the position before each target, targets (n,). Tokens come in text order,
    in the chunks ``chunk_sizes`` names, whatever BATCH_SIZE is, so two models' chunks pair token by token."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size < 2:
        raise ValueError("need a 1-D sequence of at least 2 token ids")
    plan = list(windows(ids.size, context, stride))
    for i in range(0, len(plan), batch_size):
        group = plan[i : i + batch_size]
        # Windows of equal length batch together (only the last window can be shorter); rows go out in text order.
        out = {}
        for length in sorted({end - begin for begin, end, _ in group}):
            part = [w for w in group if w[1] - w[0] == length]
            x = np.stack([ids[b:e] for b, e, _ in part])  # (B, T)
            logits = logits_fn(x)  # (B, T, V), in float64 below a chunk of positions at a time
            out.update({w: (logits[row], x[row]) for row, w in enumerate(part)})
        for b, e, first in group:
            logits, x = out.pop((b, e, first))
            scored_at = np.arange(first - b, e - b)  # window positions of the scored tokens
            for at in range(0, scored_at.size, _CHUNK):
                pos = scored_at[at : at + _CHUNK]
                # position t-1 predicts token t
                yield np.asarray(logits[pos - 1], dtype=np.float64), x[pos]


def chunk_sizes(n_tokens: int, context: int, stride: int) -> Iterator[int]:
    """How many tokens each chunk of ``scored_logits`` holds, in order, for a text of N_TOKENS."""
    for _, end, first in windows(n_tokens, context, stride):
        scored = end - first
        yield from (min(_CHUNK, scored - at) for at in range(0, scored, _CHUNK))


def logsumexp(z: np.ndarray) -> np.ndarray:
    """log sum exp over the last axis of Z (float64), stable: (n, V) -> (n, 1)."""
    zmax = z.max(axis=-1, keepdims=True)
    return np.log(np.exp(z - zmax).sum(axis=-1, keepdims=True)) + zmax


def perplexity(
    logits_fn: LogitsFn,
    ids: np.ndarray,
    context: int,
    stride: int,
    batch_size: int = 4,
    data: str = "",
    progress: Callable[[int], None] | None = None,
    token_nll: list | None = None,
) -> PerplexityResult:
    """Sliding-window perplexity of ``ids`` (1-D) under ``logits_fn``; ``progress(n)`` gets scored tokens;
    ``token_nll``, a list, gets each scored token's NLL, in an order fixed by IDS, CONTEXT, STRIDE and BATCH_SIZE
    (so two models' lists pair token by token)."""
    nll_sum, scored = 0.0, 0
    for z, targets in scored_logits(logits_fn, ids, context, stride, batch_size):
        nll = logsumexp(z)[:, 0] - z[np.arange(targets.size), targets]
        nll_sum += float(nll.sum())
        scored += targets.size
        if token_nll is not None:
            token_nll.extend(nll.tolist())
        if progress is not None:
            progress(targets.size)
    nll = nll_sum / scored
    return PerplexityResult(float(np.exp(nll)), nll, scored, context, stride, data)


def kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """KL(reference || candidate) in nats at each row of two (n, V) log-probability arrays (float64 sums;
    rounding below zero clipped: the divergence is never negative)."""
    ref = reference.astype(np.float64)
    return np.maximum((np.exp(ref) * (ref - candidate.astype(np.float64))).sum(-1), 0.0)


@dataclass
class Agreement:
    """How a model's next-token distributions compare with a reference's on the same tokens (llama.cpp's
    llama-perplexity --kl-divergence reports the same figures)."""

    kld_mean: float  # mean KL(reference || model) per scored token, nats
    kld_p99: float  # its 99th percentile over the tokens
    kld_max: float  # its largest value
    top1: float  # fraction of tokens where both pick the same most likely next token
    ppl: float  # the model's perplexity on these tokens
    reference_ppl: float  # the reference's
    tokens: int  # tokens scored

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReferenceRows:
    """A reference's answer at a chunk of scored tokens: what agreement compares a model with."""

    logp: np.ndarray  # (n, V) float64 next-token log-probabilities (a distribution: each row sums to 1 in p)
    top: np.ndarray  # (n,) its most likely next token
    nll: np.ndarray  # (n,) float64 its NLL of the token that follows


def reference_rows(
    reference_fn: LogitsFn, ids: np.ndarray, context: int, stride: int, batch_size: int = 4
) -> Iterator[ReferenceRows]:
    """REFERENCE_FN's rows on the scored tokens of IDS, in the chunks of ``scored_logits``."""
    for r, targets in scored_logits(reference_fn, ids, context, stride, batch_size):
        lp = r - logsumexp(r)
        yield ReferenceRows(lp, r.argmax(-1), -lp[np.arange(targets.size), targets])


def agreement(
    logits_fn: LogitsFn,
    reference: Iterable[ReferenceRows],
    ids: np.ndarray,
    context: int,
    stride: int,
    batch_size: int = 4,
    progress: Callable[[int], None] | None = None,
) -> Agreement:
    """LOGITS_FN against REFERENCE (``reference_rows`` of a model, or the same rows kept: one chunk for each of
    ``scored_logits``) on the scored tokens of IDS: KL(reference || model) per token, top-1 agreement, and both
    perplexities."""
    kld, same, nll, ref_nll = [], 0, 0.0, 0.0
    for (z, targets), ref in zip(scored_logits(logits_fn, ids, context, stride, batch_size), reference, strict=True):
        if ref.top.size != targets.size:
            raise ValueError(f"the reference gives {ref.top.size} tokens where the model scores {targets.size}")
        lq = z - logsumexp(z)
        kld.append(kl_divergence(ref.logp, lq))
        same += int((z.argmax(-1) == ref.top).sum())
        nll -= float(lq[np.arange(targets.size), targets].sum())
        ref_nll += float(ref.nll.sum())
        if progress is not None:
            progress(targets.size)
    per_token = np.concatenate(kld)
    n = per_token.size
    return Agreement(
        float(per_token.mean()),
        float(np.percentile(per_token, 99)),
        float(per_token.max()),
        same / n,
        float(np.exp(nll / n)),
        float(np.exp(ref_nll / n)),
        n,
    )


def torch_logits_fn(model) -> LogitsFn:
    """Adapt a causal LM (``model(input_ids).logits``) to ``LogitsFn``."""
    import torch

    device = next(model.parameters()).device

    @torch.inference_mode()
    def fn(x: np.ndarray) -> np.ndarray:
        out = model(torch.from_numpy(x).to(device), use_cache=False)
        return out.logits.float().cpu().numpy()

    return fn
