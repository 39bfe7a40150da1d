"""LayerCollapse (arXiv 2311.17943): turn linearizing MLPs whose slope reached 1 into one affine map.

A linearizing MLP computes c_proj(alpha * h + (1 - alpha) * act(h)), h = c_fc(x). At alpha = 1 it
is c_proj(c_fc(x)) = W x + b with W = W_proj W_fc and b = W_proj b_fc + b_proj, exactly; below 1
the collapse drops (1 - alpha) * c_proj(act(h) - h), so per token its error is at most
(1 - alpha) * ||W_proj||_2 * ||act(h) - h||, and the squared error carries the (1 - alpha)^2
that the training regulariser lc * (1 - alpha)^2 pushes down. In GPT-2 the MLP sits inside a
residual branch, so collapsing it leaves the skip connection alone. A collapsed MLP of width w
has w^2 + w parameters instead of 8 w^2 + 5 w.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from clidep.compress.widths import student_config
from clidep.model.modeling import CLIGPT2LMHeadModel, CollapsedMLP, Linearizing
from clidep.model.params import block_params


def linearizing_blocks(model) -> list[int]:
    return [i for i, b in enumerate(model.transformer.h) if isinstance(getattr(b.mlp, "act", None), Linearizing)]


def regulariser(model, lc: float) -> torch.Tensor:
    """lc * sum over linearizing MLPs of (1 - alpha)^2."""
    alphas = [model.transformer.h[i].mlp.act.alpha for i in linearizing_blocks(model)]
    return lc * sum((1 - a) ** 2 for a in alphas) if alphas else torch.zeros(())


@torch.no_grad()
def collapsed_weights(mlp) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of the affine map a linearizing MLP becomes at alpha = 1 (nn.Linear layout, (out, in))."""
    W = mlp.c_proj.weight @ mlp.c_fc.weight  # (w, 4w) @ (4w, w) -> (w, w)
    b = mlp.c_proj.weight @ mlp.c_fc.bias + mlp.c_proj.bias  # (w,)
    return W, b


@contextmanager
def _swapped(model, layer: int, module):
    block = model.transformer.h[layer]
    original = block.mlp
    block.mlp = module
    try:
        yield
    finally:
        block.mlp = original


@torch.no_grad()
def collapse(model: CLIGPT2LMHeadModel, ids: torch.Tensor, tol: float = 0.05) -> tuple[CLIGPT2LMHeadModel, list[dict]]:
    """Collapse every linearizing MLP with |1 - alpha| <= TOL; measure each one on calibration IDS.

    Returns the collapsed model (a new one, config updated) and one record per linearizing block:
    layer, alpha, collapsed, params_saved, error_bound, max_logit_diff (that layer alone).
    """
    model.eval()
    reference = model(ids, use_cache=False).logits
    records = [_measure(model, i, ids, reference, tol) for i in linearizing_blocks(model)]
    return _collapsed_model(model, [r["layer"] for r in records if r["collapsed"]]), records


@torch.no_grad()
def _measure(model: CLIGPT2LMHeadModel, i: int, ids: torch.Tensor, reference: torch.Tensor, tol: float) -> dict:
    """Block I's record: its alpha, the bound on and the measured change of the logits (against REFERENCE, on IDS)
    were its MLP replaced by the affine map, and whether it is collapsed (|1 - alpha| <= TOL)."""
    block = model.transformer.h[i]
    mlp = block.mlp
    alpha = float(mlp.act.alpha)
    inputs = []
    hook = block.ln_2.register_forward_hook(lambda m, a, o: inputs.append(o))
    model(ids, use_cache=False)
    hook.remove()
    h = mlp.c_fc(inputs[0])  # (B, T, 4w)
    gap = (mlp.act.act(h) - h).norm(dim=-1).max()  # max over tokens of ||act(h) - h||
    bound = abs(1 - alpha) * torch.linalg.matrix_norm(mlp.c_proj.weight, ord=2) * gap
    W, b = collapsed_weights(mlp)
    linear = CollapsedMLP(model.config, i).eval()
    linear.linear.weight.copy_(W)
    linear.linear.bias.copy_(b)
    with _swapped(model, i, linear):
        diff = float((model(ids, use_cache=False).logits - reference).abs().max())
    w, inner = model.config.layer_widths[i], model.config.inner(i)
    ok = abs(1 - alpha) <= tol
    saved = block_params(w, inner=inner, mlp_kind="linearizing") - block_params(w, inner=inner, mlp_kind="collapsed")
    return {
        "layer": i,
        "alpha": alpha,
        "collapsed": ok,
        "params_saved": saved if ok else 0,
        "error_bound": float(bound),
        "max_logit_diff": diff,
        **({} if ok else {"reason": f"|1 - alpha| = {abs(1 - alpha):.3f} > {tol}"}),
    }


@torch.no_grad()
def _collapsed_model(model: CLIGPT2LMHeadModel, layers: list[int]) -> CLIGPT2LMHeadModel:
    """A new model: MODEL with the MLPs of LAYERS replaced by their affine maps, every other weight kept."""
    kinds = list(model.config.mlp_kinds)
    for i in layers:
        kinds[i] = "collapsed"
    config = student_config(model.config, model.config.layer_widths, model.config.layer_head_dims, kinds)
    out = CLIGPT2LMHeadModel(config).eval()
    state = {
        k: v for k, v in model.state_dict().items() if not any(k.startswith(f"transformer.h.{i}.mlp.") for i in layers)
    }
    for i in layers:
        W, b = collapsed_weights(model.transformer.h[i].mlp)
        state[f"transformer.h.{i}.mlp.linear.weight"] = W
        state[f"transformer.h.{i}.mlp.linear.bias"] = b
    missing, unexpected = out.load_state_dict(state, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected, (
        f"collapse mapping: missing {missing}, unexpected {unexpected}"
    )
    out.tie_weights()
    return out
