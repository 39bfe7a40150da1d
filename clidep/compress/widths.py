"""Width schedules and the solver that sizes them (shapes only, no weights).

* CLI: protected blocks at the teacher's width d, every other block at one bottleneck width r.
* uniform: every block at r (the paper's ablation baseline).
* auto: block i at c * d * (score_i / max score) ** gamma, clipped to [d / 8, d] and rounded to
  multiples of ``auto_step(d)``; gamma 0 is the uniform bottleneck, a large gamma approaches CLI
  (the most important blocks at d, the rest at the floor). c is found like r: the student nearest
  the target.

The solver searches r (in steps of 4) for the student whose closed-form parameter count
(``params.param_count``) is nearest a target; narrow blocks take the head size nearest the
teacher's among the divisors of r, while protected blocks keep the teacher's heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clidep.errors import ClidepError
from clidep.model.config import CLIGPT2Config
from clidep.model.params import param_count


@dataclass
class Solution:
    widths: list[int]
    width: int  # the bottleneck width r
    head_dim: int
    params: int
    target: int
    arithmetic: str  # how the numbers came about, printed by the command line

    @property
    def error(self) -> float:
        return self.params / self.target - 1


def protected_blocks(critical: list[int], n_layer: int) -> list[int]:
    """CLI's protected set: the critical blocks plus the last one, which restores the full width."""
    return sorted(set(critical) | {n_layer - 1})


def schedule(method: str, n_layer: int, d: int, r: int, protect: list[int]) -> list[int]:
    """The per-block widths of METHOD (cli or uniform) with bottleneck R."""
    if method == "uniform":
        return [r] * n_layer
    if method == "cli":
        bad = [p for p in protect if not 0 <= p < n_layer]
        if bad:
            raise ClidepError(f"--protect names block {bad[0]}, but the teacher has blocks 0..{n_layer - 1}")
        return [d if i in protect else r for i in range(n_layer)]
    raise ClidepError(f"unknown --method '{method}': choose cli or uniform")


def student_config(
    teacher: CLIGPT2Config, widths: list[int], head_dims: list[int], mlp_kinds: list[str] | None = None
) -> CLIGPT2Config:
    """The teacher's config with a new width schedule, head sizes and MLP kinds; everything else kept.

    The one way clidep derives a config from another (LayerCollapse's kinds go through it too).
    """
    return CLIGPT2Config(
        **{**teacher.to_dict(), "layer_widths": widths, "layer_head_dims": head_dims, "mlp_kinds": mlp_kinds}
    )


def head_size(width: int, preferred: int) -> int:
    """The divisor of WIDTH nearest PREFERRED (ties to the larger): the head size of a block of that width."""
    return min((width // h for h in range(1, width + 1) if width % h == 0), key=lambda hd: (abs(hd - preferred), -hd))


def grid_head_size(tconf, asked: int | None) -> int:
    """The head size grid's widths are whole heads of: ASKED (--head-size), else the teacher's (TCONF's); a
    ClidepError unless it divides the teacher's and is a multiple of 8."""
    hd = asked or tconf.head_dim
    if tconf.head_dim % hd or hd % 8:
        raise ClidepError(
            f"--head-size {hd}: grid's heads are cut from the teacher's heads of {tconf.head_dim}, so the size must "
            f"divide {tconf.head_dim} and be a multiple of 8 (ONNX Runtime's attention kernels): "
            + ", ".join(str(h) for h in range(8, tconf.head_dim + 1, 8) if tconf.head_dim % h == 0)
        )
    return hd


def build(teacher: CLIGPT2Config, method: str, r: int, protect: list[int]) -> CLIGPT2Config:
    """The student config of METHOD at bottleneck R: protected blocks keep the teacher's width and heads."""
    widths = schedule(method, teacher.n_layer, teacher.n_embd, r, protect)
    return student_config(teacher, widths, schedule_head_dims(teacher, widths))


#: How far below the smallest reachable size a target may lie and still be rounded up to it.
REACH = 0.97


def nearest_size(sizes: list[tuple[int, object]], target: int) -> tuple[int, object] | None:
    """The (parameters, choice) pair nearest TARGET, or None when TARGET lies more than 3% below the smallest."""
    if target < min(p for p, _ in sizes) * REACH:
        return None
    return min(sizes, key=lambda t: abs(t[0] - target))


def solve(teacher: CLIGPT2Config, method: str, target: int, protect: list[int], collapse: list[int] = ()) -> Solution:
    """The bottleneck width r (a multiple of 4) whose student is closest to TARGET parameters.

    The head size of the narrow blocks is the divisor of r nearest the teacher's head size.
    Blocks in COLLAPSE are counted with collapsed MLPs: LayerCollapse trains them towards linear
    and folds them after distillation, so the size asked for is the size the student ends at.
    """
    d, n = teacher.n_embd, teacher.n_layer
    kinds = ["collapsed" if i in collapse else "standard" for i in range(n)]
    if target <= 0:
        raise ClidepError(f"the target size must be positive, got {target}")
    teacher_params = param_count(teacher)
    sizes = [
        (param_count(student_config(teacher, schedule(method, n, d, r, protect), [1] * n, kinds)), r)
        for r in range(4, d + 1, 4)
    ]
    best, smallest = nearest_size(sizes, target), sizes[0][0]
    if best is None:
        raise ClidepError(
            f"a {method} student cannot be as small as {target:,} parameters: the embeddings"
            f"{' and protected blocks ' + str(protect) if method == 'cli' else ''} already need {smallest:,} "
            f"(largest reachable ratio {teacher_params / smallest:.2f})"
        )
    params, r = best
    config = build(teacher, method, r, protect)
    hd = head_size(r, teacher.head_dim)
    arithmetic = "\n".join(
        [
            f"teacher: {n} blocks x {d}, {teacher_params:,} parameters; target {target:,} (ratio {teacher_params / target:.3f})",
            f"{method}: widths {_compact(config.layer_widths)}, narrow blocks {r // hd} heads of {hd}; "
            f"{params:,} parameters ({params / target - 1:+.2%}), ratio {teacher_params / params:.3f}"
            + (f", counting the MLPs of blocks {sorted(collapse)} as collapsed" if collapse else ""),
        ]
    )
    return Solution(config.layer_widths, r, hd, params, target, arithmetic)


#: --method auto rounds every width to a multiple of this (d / 16 for teachers narrower than 256).
AUTO_STEP = 16


def auto_step(d: int) -> int:
    return min(AUTO_STEP, max(4, d // 16))


def allocate(teacher: CLIGPT2Config, scores: list[float], gamma: float, target: int) -> Solution:
    """The auto schedule nearest TARGET parameters for per-block SCORES (higher: more important) and GAMMA."""
    d, n = teacher.n_embd, teacher.n_layer
    if len(scores) != n:
        raise ClidepError(f"{len(scores)} importance scores for a teacher of {n} blocks")
    top = max(scores)
    step = auto_step(d)
    floor = max(step, d // 8 // step * step)
    norm = [max(s, top * 1e-6) / top if top > 0 else 1.0 for s in scores]  # (n,) in (0, 1]
    shares = [x**gamma for x in norm]

    def widths(c: float) -> list[int]:
        return [min(d, max(floor, round(c * d * x / step) * step)) for x in shares]

    def size(w) -> int:
        return param_count(student_config(teacher, list(w), schedule_head_dims(teacher, w)))

    ladder = []  # (c, widths, params) of every distinct schedule as c grows
    for c in np.geomspace(1e-3, 2 / min(shares), 2400):  # up to every block at d
        w = widths(float(c))
        if not ladder or w != ladder[-1][1]:
            ladder.append((float(c), w, size(w)))
    below = [x for x in ladder if x[2] <= target]
    if not below and ladder[0][2] < target / REACH:
        below = ladder[:1]
    if not below:
        raise ClidepError(
            f"an auto student cannot be as small as {target:,} parameters: blocks of {floor} already need "
            f"{ladder[0][2]:,} (largest reachable ratio {param_count(teacher) / ladder[0][2]:.2f})"
        )
    c, w, p = below[-1]
    # Rounding moves blocks of equal score together; largest remainders first, one step at a time,
    # fill the gap to the next rung so the size lands within a step of one block of the target.
    rest = [c * d * x - wi for x, wi in zip(shares, w)]
    steps = [(p, list(w))]
    while p < target and gamma > 0:  # gamma 0 stays the uniform bottleneck
        open_ = [i for i in range(n) if w[i] < d]
        if not open_:
            break
        i = max(open_, key=lambda j: rest[j])
        w = [*w[:i], w[i] + step, *w[i + 1 :]]
        rest[i] -= step
        p = size(w)
        steps.append((p, w))
    above = [(p_, w_) for _, w_, p_ in ladder if p_ > target][:1]  # the next rung, when nearer
    best = min(steps + above, key=lambda t: abs(t[0] - target))
    params, w = best
    teacher_params = param_count(teacher)
    arithmetic = "\n".join(
        [
            f"teacher: {n} blocks x {d}, {teacher_params:,} parameters; target {target:,} (ratio {teacher_params / target:.3f})",
            "auto: width_i = clip(c x " + f"{d} x (score_i / max)^{gamma:g}, {floor}, {d}) in steps of {step}; "
            f"scores / max [{', '.join(f'{x:.3g}' for x in norm)}]",
            f"auto: widths {_compact(list(w))}; {params:,} parameters ({params / target - 1:+.2%}), ratio {teacher_params / params:.3f}",
        ]
    )
    return Solution(list(w), min(w), teacher.head_dim, params, target, arithmetic)


def schedule_head_dims(teacher: CLIGPT2Config, widths) -> list[int]:
    """Head sizes of any schedule: full-width blocks keep the teacher's heads; a narrow block of width
    w takes the divisor of w nearest the teacher's head size."""
    return [
        teacher.layer_head_dims[i] if w == teacher.n_embd else head_size(w, teacher.head_dim)
        for i, w in enumerate(widths)
    ]


def _compact(widths: list[int]) -> str:
    parts, i = [], 0
    while i < len(widths):
        j = i
        while j + 1 < len(widths) and widths[j + 1] == widths[i]:
            j += 1
        parts.append(f"{widths[i]}" if i == j else f"{widths[i]} x{j - i + 1}")
        i = j + 1
    return "[" + ", ".join(parts) + "]"
