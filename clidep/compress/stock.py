"""Students that are stock GPT-2s: ``slim`` (one narrower residual width), ``depth`` (fewer blocks), both.

* slim (Minitron's embedding-channel pruning, SliceGPT's slicing): token and position embeddings,
  every block, the final LayerNorm and the tied head at one width w < d; each block keeps the
  teacher's most important heads and MLP neurons (``student_init.init_narrow_block``).
* depth (ShortGPT, distilGPT2): k of the teacher's n blocks at full width, copied; which ones
  by ``--depth-scorer``: ``bi`` keeps the k of highest block influence 1 - cos(in, out) (ShortGPT
  removes the lowest), ``ntk`` the k of highest NTK trace, ``every-other`` k evenly spaced blocks
  (distilGPT2 kept 6 of 12).
* depth+slim: k blocks at width w, the split between the two chosen by the short distillation
  that ``--method auto`` uses (``auto.proxy_ppl``'s loop), every trial recorded.
* grid (Minitron's axes, on the grid quantisers and kernels take whole): the residual width in whole heads
  of the teacher's head size (64 for GPT-2 and the reference teacher; ``--head-size 32`` cuts each kept head
  to its 32 most important dimensions, as slim does, for the widths between), the MLP width (``n_inner``)
  on MLP_GRID, and the depth, each chosen separately; the candidate shapes within 2% of the target are
  ranked by the same short distillation, every trial recorded.

The searches rank by the validation perplexity of the file ``--precision`` names (int8 by default): the
trial's weights as that file's block quantiser stores them (``shipped.py``), beside its fp32 figure.

Each is a ``CLIGPT2Config`` of the identity schedule (one width, one head size), so it trains as
every clidep student does and is saved as a ``GPT2LMHeadModel`` (``convert.to_gpt2``): plain
transformers, optimum, llama.cpp and ExecuTorch take it without clidep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clidep.compress.widths import grid_head_size
from clidep.errors import ClidepError

#: slim's residual width moves in steps of this (as the bottleneck solver's r does).
WIDTH_STEP = 4
#: grid's MLP width moves in steps of this: ONNX Runtime's int4 MatMulNBits blocks (INT4_BLOCK, 128) and
#: llama.cpp's 32-weight Q4_0/Q8_0 blocks split it whole (a row of the MLP's down projection is this long);
#: the k-quants' 256 also wherever it is a multiple of 256. Its residual width moves in whole heads.
MLP_GRID = 128
#: grid ranks at most this many candidate shapes by a short distillation.
GRID_TRIALS = 4


@dataclass
class StockPlan:
    """A stock student's shape and how it was reached (run.json and compress.json keep it)."""

    width: int  # the one residual width (the teacher's d: depth only)
    head_dim: int  # the one head size (heads = width / head_dim)
    mlp_inner: int | None  # the MLP width where it is not 4 x width (grid), else None
    kept: list[int]  # the teacher's blocks kept, in order (all of them: slim only)
    params: int
    arithmetic: str

    def record(self) -> dict:
        inner = {} if self.mlp_inner is None else {"mlp_inner": self.mlp_inner}
        return {
            "width": self.width,
            "head_dim": self.head_dim,
            "kept_blocks": self.kept,
            "params": self.params,
            **inner,
        }


def stock_config(tconf, width: int, n_layer: int, head_dim: int | None = None, mlp_inner: int | None = None):
    """TCONF (a full-width clidep config) at one residual WIDTH and N_LAYER blocks; heads of HEAD_DIM, else of
    the divisor of WIDTH nearest the teacher's head size; an MLP of MLP_INNER (else 4 x WIDTH); the rest kept."""
    from clidep.compress.widths import head_size
    from clidep.model.config import CLIGPT2Config

    hd = head_dim or (tconf.head_dim if width == tconf.n_embd else head_size(width, tconf.head_dim))
    drop = ("layer_widths", "layer_head_dims", "mlp_kinds", "mlp_inner")
    keep = {k: v for k, v in tconf.to_dict().items() if k not in drop}
    shape = {"n_embd": width, "n_layer": n_layer, "n_head": width // hd, "head_dim": hd, "mlp_inner": mlp_inner}
    return CLIGPT2Config(**{**keep, **shape})


def size(tconf, width: int, n_layer: int, head_dim: int | None = None, mlp_inner: int | None = None) -> int:
    from clidep.model.params import param_count

    return param_count(stock_config(tconf, width, n_layer, head_dim, mlp_inner))


def grid_candidates(tconf, target: int, head_dim: int | None = None) -> list[dict]:
    """Every grid shape within 2% of TARGET: a width of whole heads of HEAD_DIM (default: the teacher's) below the
    teacher's, a depth, and the MLP width on MLP_GRID (at most the teacher's) nearest TARGET for them; nearest
    first."""
    hd, d, n = head_dim or tconf.head_dim, tconf.n_embd, tconf.n_layer
    steps = tconf.inner(0) // MLP_GRID  # MLP widths MLP_GRID, 2 MLP_GRID, ... up to the teacher's
    found = []
    for w in range(hd, d, hd):
        for k in range(1, n + 1):
            # parameters are affine in the MLP width: two counts give every grid step's, and the nearest step
            low = size(tconf, w, k, hd, MLP_GRID)
            per_step = size(tconf, w, k, hd, 2 * MLP_GRID) - low
            step = min(max(round((target - low) / per_step), 0), steps - 1)
            params, inner = low + step * per_step, (step + 1) * MLP_GRID
            if abs(params / target - 1) <= 0.02:
                found.append({"width": w, "blocks": k, "head_dim": hd, "mlp_inner": inner, "params": params})
    return sorted(found, key=lambda f: abs(f["params"] / target - 1))


def shape_config(tconf, shape: dict):
    """The config of a grid_candidates SHAPE (its width, blocks, head size and MLP width) of TCONF."""
    return stock_config(tconf, shape["width"], shape["blocks"], shape["head_dim"], shape["mlp_inner"])


def grid_trials(tconf, target: int, head_dim: int | None = None) -> list[dict]:
    """The shapes grid's search distils at TARGET, in heads of HEAD_DIM (default: the teacher's): of
    grid_candidates, the nearest of each width first (one width does not fill the trials), then the nearest of
    the rest, up to GRID_TRIALS."""
    found = grid_candidates(tconf, target, head_dim)
    nearest = {}
    for f in found:  # nearest first: the first of each width is its nearest
        nearest.setdefault(f["width"], f)
    return [*nearest.values(), *(f for f in found if f not in nearest.values())][:GRID_TRIALS]


def slim_width(tconf, target: int, n_layer: int | None = None) -> int:
    """The residual width (a multiple of 4, below d) whose student of N_LAYER blocks (default all) is nearest TARGET."""
    from clidep.compress.widths import nearest_size

    n = n_layer or tconf.n_layer
    sizes = [(size(tconf, w, n), w) for w in range(WIDTH_STEP, tconf.n_embd, WIDTH_STEP)]
    best = nearest_size(sizes, target)
    if best is None:
        raise ClidepError(
            f"a slim student of {n} blocks cannot be as small as {target:,} parameters: width "
            f"{WIDTH_STEP} already needs {sizes[0][0]:,}"
        )
    return best[1]


def depth_blocks(tconf, target: int) -> int:
    """The number of blocks (1..n-1) whose full-width student is nearest TARGET."""
    from clidep.compress.widths import nearest_size

    sizes = [(size(tconf, tconf.n_embd, k), k) for k in range(1, tconf.n_layer)]
    best = nearest_size(sizes, target)
    if best is None:
        raise ClidepError(
            f"a depth student cannot be as small as {target:,} parameters: the embeddings and one block "
            f"already need {sizes[0][0]:,}; use --method slim or depth+slim"
        )
    return best[1]


def keep_blocks(scores: list[float] | None, k: int, n: int, scorer: str) -> list[int]:
    """The K blocks of N a depth student keeps: the K highest SCORES, or K evenly spaced (every-other)."""
    if scorer == "every-other":
        return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})
    order = sorted(range(n), key=lambda i: -scores[i])
    return sorted(order[:k])


def block_scores(teacher: str, scorer: str, tconf) -> list[float] | None:
    """Per-block importance of TEACHER by SCORER (None for every-other, which needs none)."""
    if scorer == "every-other":
        return None
    from clidep.compress.analyze import quick_analysis

    report = quick_analysis(teacher, scorer, tconf.n_positions)
    return [row[scorer] for row in report["scores"]]


def plan(
    method: str, teacher: str, tconf, target: int | None, width: int | None, scorer: str, c, data: str, log=print
) -> tuple[StockPlan, dict]:
    """The stock student of METHOD for TEACHER (its config TCONF) at TARGET parameters (or an explicit slim
    WIDTH), with the record of how: (plan, record for run.json)."""
    d, n = tconf.n_embd, tconf.n_layer
    tparams = size(tconf, d, n)
    if method == "grid":
        grid_head_size(tconf, c.head_size)  # refused before the blocks are scored
    scores = block_scores(teacher, scorer, tconf) if method != "slim" else None
    record = {"method": method, "teacher_blocks": n, "teacher_width": d}
    if method == "slim":
        w = width if width is not None else slim_width(tconf, target)
        kept = list(range(n))
    elif method == "depth":
        w, k = d, depth_blocks(tconf, target)
        kept = keep_blocks(scores, k, n, scorer)
    elif method == "grid":
        shape, trials = _grid(teacher, tconf, target, scores, scorer, c, data, log)
        w, hd, inner = shape["width"], shape["head_dim"], shape["mlp_inner"]
        kept = keep_blocks(scores, shape["blocks"], n, scorer)
        record["trials"] = trials
    else:
        k, w, trials = _split(teacher, tconf, target, scores, scorer, c, data, log)
        kept = keep_blocks(scores, k, n, scorer)
        record["trials"] = trials
    if scores is not None:
        record.update(depth_scorer=scorer, block_scores=scores)
    elif method != "slim":
        record["depth_scorer"] = scorer
    if method != "grid":
        hd, inner = None, None
    p = size(tconf, w, len(kept), hd, inner)
    cfg = stock_config(tconf, w, len(kept), hd, inner)
    aim = f"target {target:,} (ratio {tparams / target:.3f})" if target else f"explicit width {w}"
    lines = [
        f"teacher: {n} blocks x {d}, {tparams:,} parameters; {aim}",
        f"{method}: {len(kept)} blocks x {w} ({cfg.n_head} heads of {cfg.head_dim}, MLP {cfg.inner(0)}), kept blocks {kept}"
        + (f" by {scorer}" if method != "slim" else "")
        + f"; {p:,} parameters"
        + (f" ({p / target - 1:+.2%})" if target else "")
        + f", ratio {tparams / p:.3f}; a stock GPT-2",
    ]
    record["kept_blocks"], record["width"], record["head_dim"] = kept, w, cfg.head_dim
    if inner is not None:
        record["mlp_inner"] = inner
    return StockPlan(w, cfg.head_dim, inner, kept, p, "\n".join(lines)), record


#: depth+slim tries this many splits, from depth alone (widest) to width alone (every block).
SPLITS = 4


def _split(teacher: str, tconf, target: int, scores, scorer: str, c, data: str, log) -> tuple[int, int, list[dict]]:
    """(blocks, width, trials) of depth+slim: SPLITS block counts between depth alone and every block, each at the
    width that reaches TARGET, distilled for c.search_steps steps; the lowest validation perplexity of the
    c.precision file wins."""
    from clidep.compress.shipped import ranked_by, said
    from clidep.compress.widths import REACH

    n = tconf.n_layer
    try:
        k_min = depth_blocks(tconf, target)
    except ClidepError:  # depth alone cannot get there: every split narrows too
        k_min = 1
    counts = sorted({int(round(x)) for x in np.linspace(k_min, n, SPLITS)})
    trial = _brief_distillation(teacher, c, data)
    log(f"depth+slim: {len(counts)} splits, {c.search_steps} distillation steps each, scored on {c.val_data}")
    trials = []
    for k in counts:
        w = tconf.n_embd if size(tconf, tconf.n_embd, k) <= target / REACH and k < n else slim_width(tconf, target, k)
        kept = keep_blocks(scores, k, n, scorer)
        figures = trial(stock_config(tconf, w, k), kept)
        trials.append({"blocks": k, "width": w, "kept_blocks": kept, "params": size(tconf, w, k), **figures})
        log(f"depth+slim: {k} blocks x {w}: {said(figures)}")
    best = min(trials, key=lambda t: t[ranked_by(c.precision)])
    return best["blocks"], best["width"], trials


def _grid(teacher: str, tconf, target: int, scores, scorer: str, c, data: str, log) -> tuple[dict, list[dict]]:
    """(shape, trials) of grid: among the grid shapes within 2% of TARGET, the nearest of each width first,
    up to GRID_TRIALS, each distilled for c.search_steps steps; the lowest validation perplexity of the
    c.precision file wins."""
    from clidep.compress.shipped import ranked_by, said

    hd = grid_head_size(tconf, c.head_size)
    picks = grid_trials(tconf, target, hd)
    if not picks:
        raise ClidepError(
            f"no grid student (widths in whole heads of {hd}, MLP widths in steps of {MLP_GRID}, 1 to "
            f"{tconf.n_layer} blocks) is within 2% of {target:,} parameters; use --method slim"
        )
    if len(picks) == 1:
        return picks[0], picks
    trial = _brief_distillation(teacher, c, data)
    log(f"grid: {len(picks)} shapes, {c.search_steps} distillation steps each, scored on {c.val_data}")
    for shape in picks:
        kept = keep_blocks(scores, shape["blocks"], tconf.n_layer, scorer)
        figures = trial(shape_config(tconf, shape), kept)
        shape.update(kept_blocks=kept, **figures)
        log(f"grid: {shape['blocks']} blocks x {shape['width']}, MLP {shape['mlp_inner']}: {said(figures)}")
    return min(picks, key=lambda t: t[ranked_by(c.precision)]), picks


def _brief_distillation(teacher: str, c, data: str):
    """trial(config, kept) -> the validation perplexities of a stock student of CONFIG (keeping the teacher's
    blocks KEPT) after c.search_steps distillation steps, as --method auto ranks its candidates."""
    from clidep.compress.corpus import token_file
    from clidep.compress.distill import validation_ids
    from clidep.compress.shipped import scores
    from clidep.data import load_tokenizer
    from clidep.model.convert import load_model

    teacher_model = load_model(teacher).eval()
    tokenizer = load_tokenizer(teacher)
    tokens, val_ids = token_file(tokenizer, data), validation_ids(tokenizer, c.val_data)

    def trial(config, kept: list[int]) -> dict:
        return scores(distil_stock_briefly(teacher_model, config, kept, tokens, c), val_ids, c.precision)

    return trial


def distil_stock_briefly(teacher_model, config, kept: list[int], tokens: np.ndarray, c):
    """A search trial's student: the stock student of CONFIG, initialised from TEACHER_MODEL's blocks KEPT, after
    c.search_steps distillation steps on TOKENS (``auto.distil_briefly``)."""
    from clidep.compress.auto import distil_briefly
    from clidep.compress.student_init import init_stock

    init = lambda s, ids: init_stock(s, teacher_model, kept, ids)  # noqa: E731
    return distil_briefly(teacher_model, config, init, tokens, c)
