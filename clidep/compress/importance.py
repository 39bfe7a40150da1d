"""Per-block importance scorers and the critical-layer rule.

All scorers work on one calibration batch ``ids`` (N, L) of a ``CLIGPT2LMHeadModel`` in eval mode:

* ``ntk``: tr(K_l) with K_l = J_l J_l^T, J_l the Jacobian of the model's **log-probabilities**
  (all N*L*V of them) with respect to block l's parameters, divided by the N*L tokens. Estimated
  by Hutchinson: tr(J J^T) = E ||J^T v||^2 for Rademacher v, and J^T v is the gradient of
  <v, log p>, so one backward pass per probe serves every block at once and the cost does not
  grow with the vocabulary. Log-probabilities rather than logits because a softmax ignores a
  shift of all logits; that direction carries no information and would inflate the trace.
* ``grad``: L2 norm of the gradient of the mean cross-entropy with respect to the block (Fisher-style).
* ``bi``: block influence (ShortGPT), mean over tokens of 1 - cos(block input, block output).
* ``ablation``: perplexity on the batch with the block skipped minus the full model's.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class NTKEstimate:
    """Hutchinson estimate of one parameter group's NTK trace per token."""

    trace: float
    rse: float  # relative standard error of ``trace``: std / (mean * sqrt(probes))
    params: int


def parameter_groups(model) -> dict[str, list[nn.Parameter]]:
    """``embedding`` (wte, wpe; wte is tied to the LM head) and one group per block, keyed by index."""
    t = model.transformer
    groups = {"embedding": [t.wte.weight, t.wpe.weight]}
    for i, block in enumerate(t.h):
        groups[str(i)] = list(block.parameters())
    return groups


def ntk_traces(model, ids: torch.Tensor, probes: int, seed: int) -> dict[str, NTKEstimate]:
    """Hutchinson estimate of tr(J_g J_g^T) / tokens for every parameter group g (see module doc)."""
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    groups = parameter_groups(model)
    flat = [p for ps in groups.values() for p in ps]
    gen = torch.Generator().manual_seed(seed)
    logp = torch.log_softmax(model(ids, use_cache=False).logits.float(), dim=-1)  # (N, L, V)
    tokens = ids.numel()
    samples = {name: [] for name in groups}
    for k in range(probes):
        v = torch.randint(0, 2, logp.shape, generator=gen).to(logp) * 2 - 1  # Rademacher (N, L, V)
        grads = torch.autograd.grad((logp * v).sum(), flat, retain_graph=k < probes - 1)
        it = iter(grads)
        for name, ps in groups.items():
            samples[name].append(sum(float(next(it).pow(2).sum()) for _ in ps) / tokens)  # ||J^T v||^2 / tokens
    out = {}
    for name, ps in groups.items():
        s = np.asarray(samples[name])
        mean = float(s.mean())
        std = float(s.std(ddof=1)) if probes > 1 else float("nan")
        out[name] = NTKEstimate(
            mean, std / (mean * math.sqrt(probes)) if mean > 0 else float("nan"), sum(p.numel() for p in ps)
        )
    return out


def exact_ntk_traces(model, ids: torch.Tensor) -> dict[str, float]:
    """tr(J_g J_g^T) / tokens from the full Jacobian, one backward per output: for tiny models only."""
    groups = parameter_groups(model)
    flat = [p for ps in groups.values() for p in ps]
    logp = torch.log_softmax(model(ids, use_cache=False).logits.float(), dim=-1).reshape(-1)  # (N*L*V,)
    totals = {name: 0.0 for name in groups}
    for j in range(logp.numel()):
        grads = iter(torch.autograd.grad(logp[j], flat, retain_graph=True))
        for name, ps in groups.items():
            totals[name] += sum(float(next(grads).pow(2).sum()) for _ in ps)
    return {name: total / ids.numel() for name, total in totals.items()}


def grad_norms(model, ids: torch.Tensor) -> list[float]:
    """||d loss / d theta_l||_2 per block for the mean next-token cross-entropy on the batch."""
    blocks = list(model.transformer.h)
    params = [list(b.parameters()) for b in blocks]
    loss = model(ids, labels=ids, use_cache=False).loss
    grads = iter(torch.autograd.grad(loss, [p for ps in params for p in ps]))
    return [math.sqrt(sum(float(next(grads).pow(2).sum()) for _ in ps)) for ps in params]


@torch.no_grad()
def block_influence(model, ids: torch.Tensor) -> list[float]:
    """Mean over tokens of 1 - cos(input, output) of every block (ShortGPT's BI)."""
    scores: dict[int, float] = {}

    def hook(i):
        def fn(module, args, output):
            cos = torch.nn.functional.cosine_similarity(args[0], output, dim=-1)  # (N, L)
            scores[i] = float((1 - cos).mean())

        return fn

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(model.transformer.h)]
    try:
        model(ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [scores[i] for i in range(len(handles))]


class _Skip(nn.Module):
    """Stands in for a block and passes the residual stream through unchanged."""

    def forward(self, x, mask, cache):
        return x


@contextmanager
def skipped(model, layer: int):
    """Within the context, block ``layer`` is replaced by the identity."""
    blocks = model.transformer.h
    original = blocks[layer]
    blocks[layer] = _Skip()
    try:
        yield model
    finally:
        blocks[layer] = original


@torch.no_grad()
def ablation_dppl(model, ids: torch.Tensor) -> tuple[float, list[float]]:
    """(full-model ppl on the batch, ppl increase when each block is skipped)."""

    def ppl() -> float:
        return math.exp(float(model(ids, labels=ids, use_cache=False).loss))

    base = ppl()
    deltas = []
    for i in range(len(model.transformer.h)):
        with skipped(model, i):
            deltas.append(ppl() - base)
    return base, deltas


@dataclass
class Selection:
    critical: list[int]
    rule: str


def select_critical(scores: list[float], min_gap: float = 2.0) -> Selection:
    """Largest-gap split: sort blocks by score; find the largest ratio between neighbours in the
    top half; if it is at least ``min_gap``, every block above it is critical, otherwise only the
    top block. The returned rule states the numbers that decided it."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if len(scores) == 1:
        return Selection([0], "a single block is critical by definition")
    ratios = [scores[order[k]] / max(scores[order[k + 1]], 1e-30) for k in range(max(1, len(scores) // 2))]
    k = int(np.argmax(ratios))
    if ratios[k] >= min_gap:
        critical = sorted(order[: k + 1])
        rule = (
            f"largest-gap split: blocks sorted by score; the largest ratio between neighbours in the top half is "
            f"{ratios[k]:.1f}x (block {order[k]} {scores[order[k]]:.4g} / block {order[k + 1]} {scores[order[k + 1]]:.4g}) "
            f">= {min_gap}x, so the {k + 1} block(s) above it are critical"
        )
    else:
        critical = [order[0]]
        rule = (
            f"largest-gap split: the largest ratio between neighbours in the top half is only {ratios[k]:.2f}x "
            f"(< {min_gap}x), so no group stands out and only the top block {order[0]} ({scores[order[0]]:.4g}) is critical"
        )
    return Selection(critical, rule)
