"""Width schedules and the solver that sizes them (shapes only, no weights).

* CLI: protected blocks at the teacher's width d, every other block at one bottleneck width r.
* uniform: every block at r (the paper's ablation baseline).

The solver searches r for the student whose closed-form parameter count
(``params.param_count``) is nearest a target. For CLI, r is a multiple of the head size,
which must also divide d; since steps of a whole head can be coarse, it also tries halved head
sizes. For uniform, r moves in steps of 4 and takes the head size nearest the teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .configuration import CLIGPT2Config
from .errors import ClidepError
from .params import param_count


@dataclass
class Solution:
    widths: list[int]
    width: int  # the bottleneck width r
    head_dim: int
    params: int
    target: int
    arithmetic: str  # how the numbers came about, printed by the CLI

    @property
    def error(self) -> float:
        return self.params / self.target - 1


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


def student_config(teacher: CLIGPT2Config, widths: list[int], head_dim: int) -> CLIGPT2Config:
    """The teacher's config with a new width schedule (and head size); everything else kept."""
    kwargs = {k: getattr(teacher, k) for k in (
        "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "mlp_ratio", "activation_function",
        "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "initializer_range",
        "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings")}
    return CLIGPT2Config(**kwargs, head_dim=head_dim, layer_widths=widths)


def _cli_candidates(teacher: CLIGPT2Config):
    """(r, head_dim) pairs for CLI: head_dim must divide d (the protected blocks) and r; halve it for finer r."""
    hd = teacher.head_dim
    while hd >= 4 and teacher.n_embd % hd == 0:
        yield [(r, hd) for r in range(hd, teacher.n_embd + 1, hd)]
        if hd % 2:
            break
        hd //= 2


def _uniform_candidates(teacher: CLIGPT2Config):
    """(r, head_dim) pairs for uniform: no block keeps width d, so any r in steps of 4 works, with the
    head size nearest the teacher's among the divisors of r (ties to the larger head)."""
    pairs = []
    for r in range(4, teacher.n_embd + 1, 4):
        hds = [r // h for h in range(1, r + 1) if r % h == 0]
        pairs.append((r, min(hds, key=lambda hd: (abs(hd - teacher.head_dim), -hd))))
    yield pairs


def solve(teacher: CLIGPT2Config, method: str, target: int, protect: list[int]) -> Solution:
    """The bottleneck width (and head size) whose student is closest to TARGET parameters.

    Among head sizes, the largest whose best r lands within 1.5% of the target wins (small heads
    make weak attention); if none does, the closest.
    """
    d, n = teacher.n_embd, teacher.n_layer
    if target <= 0:
        raise ClidepError(f"the target size must be positive, got {target}")
    groups = _cli_candidates(teacher) if method == "cli" else _uniform_candidates(teacher)
    tried = []  # the best (r, head_dim, params) of each head-size family
    for pairs in groups:
        scored = [(param_count(student_config(teacher, schedule(method, n, d, r, protect), hd)), r, hd) for r, hd in pairs]
        params, r, hd = min(scored, key=lambda t: abs(t[0] - target))
        tried.append((r, hd, params, min(t[0] for t in scored)))
    teacher_params = param_count(teacher)
    smallest = min(t[3] for t in tried)
    if target < smallest * 0.97:
        raise ClidepError(
            f"a {method} student cannot be as small as {target:,} parameters: the embeddings"
            f"{' and protected blocks ' + str(protect) if method == 'cli' else ''} already need {smallest:,} "
            f"(largest reachable ratio {teacher_params / smallest:.2f})"
        )
    close = [t for t in tried if abs(t[2] / target - 1) <= 0.015]
    r, hd, params, _ = max(close, key=lambda t: t[1]) if close else min(tried, key=lambda t: abs(t[2] - target))
    widths = schedule(method, n, d, r, protect)
    lines = [f"teacher: {n} blocks x {d}, {teacher_params:,} parameters; target {target:,} (ratio {teacher_params / target:.3f})"]
    for tr, thd, tp, _ in tried:
        mark = "  <- chosen" if (tr, thd) == (r, hd) else ""
        lines.append(f"  best r = {tr:>5} (head_dim {thd:>3}, {tr // thd} heads) -> {tp:,} parameters ({tp / target - 1:+.2%}){mark}")
    lines.append(f"{method}: widths {_compact(widths)}, {params:,} parameters, ratio {teacher_params / params:.3f}")
    return Solution(widths, r, hd, params, target, "\n".join(lines))


def _compact(widths: list[int]) -> str:
    parts, i = [], 0
    while i < len(widths):
        j = i
        while j + 1 < len(widths) and widths[j + 1] == widths[i]:
            j += 1
        parts.append(f"{widths[i]}" if i == j else f"{widths[i]} x{j - i + 1}")
        i = j + 1
    return "[" + ", ".join(parts) + "]"
