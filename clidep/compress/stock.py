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

Each is a ``CLIGPT2Config`` of the identity schedule (one width, one head size), so it trains as
every clidep student does and is saved as a ``GPT2LMHeadModel`` (``convert.to_gpt2``): plain
transformers, optimum, llama.cpp and ExecuTorch take it without clidep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clidep.errors import ClidepError

#: slim's residual width moves in steps of this (as the bottleneck solver's r does).
WIDTH_STEP = 4


@dataclass
class StockPlan:
    """A stock student's shape and how it was reached (run.json and compress.json keep it)."""

    width: int  # the one residual width (the teacher's d: depth only)
    head_dim: int  # the one head size (heads = width / head_dim)
    kept: list[int]  # the teacher's blocks kept, in order (all of them: slim only)
    params: int
    arithmetic: str

    def record(self) -> dict:
        return {"width": self.width, "head_dim": self.head_dim, "kept_blocks": self.kept, "params": self.params}


def stock_config(tconf, width: int, n_layer: int):
    """TCONF (a full-width clidep config) at one residual WIDTH and N_LAYER blocks; heads of the divisor of
    WIDTH nearest the teacher's head size; everything else kept."""
    from clidep.compress.widths import head_size
    from clidep.model.config import CLIGPT2Config

    hd = tconf.head_dim if width == tconf.n_embd else head_size(width, tconf.head_dim)
    keep = {k: v for k, v in tconf.to_dict().items() if k not in ("layer_widths", "layer_head_dims", "mlp_kinds")}
    return CLIGPT2Config(**{**keep, "n_embd": width, "n_layer": n_layer, "n_head": width // hd, "head_dim": hd})


def size(tconf, width: int, n_layer: int) -> int:
    from clidep.model.params import param_count

    return param_count(stock_config(tconf, width, n_layer))


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
    scores = block_scores(teacher, scorer, tconf) if method != "slim" else None
    record = {"method": method, "teacher_blocks": n, "teacher_width": d}
    if method == "slim":
        w = width if width is not None else slim_width(tconf, target)
        kept = list(range(n))
    elif method == "depth":
        w, k = d, depth_blocks(tconf, target)
        kept = keep_blocks(scores, k, n, scorer)
    else:
        k, w, trials = _split(teacher, tconf, target, scores, scorer, c, data, log)
        kept = keep_blocks(scores, k, n, scorer)
        record["trials"] = trials
    if scores is not None:
        record.update(depth_scorer=scorer, block_scores=scores)
    elif method != "slim":
        record["depth_scorer"] = scorer
    p = size(tconf, w, len(kept))
    cfg = stock_config(tconf, w, len(kept))
    aim = f"target {target:,} (ratio {tparams / target:.3f})" if target else f"explicit width {w}"
    lines = [
        f"teacher: {n} blocks x {d}, {tparams:,} parameters; {aim}",
        f"{method}: {len(kept)} blocks x {w} ({cfg.n_head} heads of {cfg.head_dim}), kept blocks {kept}"
        + (f" by {scorer}" if method != "slim" else "")
        + f"; {p:,} parameters"
        + (f" ({p / target - 1:+.2%})" if target else "")
        + f", ratio {tparams / p:.3f}; a stock GPT-2",
    ]
    record["kept_blocks"], record["width"], record["head_dim"] = kept, w, cfg.head_dim
    return StockPlan(w, cfg.head_dim, kept, p, "\n".join(lines)), record


#: depth+slim tries this many splits, from depth alone (widest) to width alone (every block).
SPLITS = 4


def _split(teacher: str, tconf, target: int, scores, scorer: str, c, data: str, log) -> tuple[int, int, list[dict]]:
    """(blocks, width, trials) of depth+slim: SPLITS block counts between depth alone and every block, each at the
    width that reaches TARGET, distilled for c.search_steps steps; the lowest validation perplexity wins."""
    from clidep.compress.auto import distil_briefly
    from clidep.compress.corpus import token_file
    from clidep.compress.distill import validation_ids
    from clidep.compress.widths import REACH
    from clidep.data import load_tokenizer
    from clidep.model.convert import load_model

    n = tconf.n_layer
    try:
        k_min = depth_blocks(tconf, target)
    except ClidepError:  # depth alone cannot get there: every split narrows too
        k_min = 1
    counts = sorted({int(round(x)) for x in np.linspace(k_min, n, SPLITS)})
    teacher_model = load_model(teacher).eval()
    tokenizer = load_tokenizer(teacher)
    tokens = token_file(tokenizer, data)
    val_ids = validation_ids(tokenizer, c.val_data)
    log(f"depth+slim: {len(counts)} splits, {c.search_steps} distillation steps each, scored on {c.val_data}")
    trials = []
    for k in counts:
        w = tconf.n_embd if size(tconf, tconf.n_embd, k) <= target / REACH and k < n else slim_width(tconf, target, k)
        kept = keep_blocks(scores, k, n, scorer)
        config = stock_config(tconf, w, k)
        ppl = distil_briefly(
            teacher_model, config, lambda s, ids: init_stock(s, teacher_model, kept, ids), tokens, val_ids, c
        )
        trials.append({"blocks": k, "width": w, "kept_blocks": kept, "params": size(tconf, w, k), "val_ppl": ppl})
        log(f"depth+slim: {k} blocks x {w}: validation ppl {ppl:.2f}")
    best = min(trials, key=lambda t: t["val_ppl"])
    return best["blocks"], best["width"], trials


def init_stock(student, teacher, kept: list[int], ids) -> None:
    """Initialise STUDENT (a stock config of KEPT's length at width w) from TEACHER on calibration IDS (N, L).

    Full width: the kept blocks, embeddings and final LayerNorm copied, nothing changed. Narrower: one
    residual basis Q (d x w), the top-w principal directions of the teacher's stream entering the kept blocks
    and its final LayerNorm; embeddings wte Q and wpe Q, each block through ``init_narrow_block`` (the
    LayerNorms folded into the next linear layer, re-centring not undone: the approximation), and the final
    LayerNorm, whose gain cannot fold into a tied head, as the diagonal of Q^T diag(gamma) Q times sqrt(d/w)
    with bias beta Q (exact where gamma is a constant).
    """
    import math

    import torch

    from clidep.compress.student_init import init_narrow_block, stream_basis

    s, t = student.transformer, teacher.transformer
    d, w = teacher.config.n_embd, student.config.n_embd
    with torch.no_grad():
        if w == d:
            for name in ("wte", "wpe", "ln_f"):
                getattr(s, name).load_state_dict(getattr(t, name).state_dict())
            for j, i in enumerate(kept):
                s.h[j].load_state_dict(t.h[i].state_dict())
        else:
            Q = stream_basis(teacher, ids, [*kept, len(t.h)], w)  # (d, w)
            s.wte.weight.copy_(t.wte.weight @ Q)
            s.wpe.weight.copy_(t.wpe.weight @ Q)
            for j, i in enumerate(kept):
                init_narrow_block(t.h[i], s.h[j], Q, d)
            s.ln_f.weight.copy_(((Q * t.ln_f.weight[:, None]) * Q).sum(0) * math.sqrt(d / w))
            s.ln_f.bias.copy_(t.ln_f.bias @ Q)
    student.tie_weights()
