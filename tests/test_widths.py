"""clidep.compress.widths: the one size search, from the paper's shapes to unreachable ratios."""

from __future__ import annotations

import pytest

from clidep import CLIGPT2Config, param_count
from clidep.compress.widths import (
    AUTO_STEP,
    allocate,
    build,
    head_size,
    nearest_size,
    protected_blocks,
    schedule,
    schedule_head_dims,
    solve,
    student_config,
)
from clidep.errors import ClidepError

MEDIUM = CLIGPT2Config(vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16)


def test_solver_reproduces_the_papers_sizes_from_shapes():
    cli = solve(MEDIUM, "cli", 143_800_000, [0, 23])
    assert cli.widths == [1024] + [496] * 22 + [1024]
    assert abs(cli.params / 143_800_000 - 1) <= 0.03
    assert round(param_count(MEDIUM) / cli.params, 2) == 2.47
    uniform = solve(MEDIUM, "uniform", cli.params, [])
    assert uniform.widths == [560] * 24 and abs(uniform.error) <= 0.02
    config = build(MEDIUM, "cli", cli.width, [0, 23])
    assert config.layer_head_dims[0] == 64 and config.kv_shapes[1] == (8, 62)  # protected blocks keep GPT-2's heads


@pytest.mark.parametrize("ratio", [2.0, 2.47, 3.0, 4.0])
def test_solver_hits_ratios_within_3_percent(ratio):
    sol = solve(MEDIUM, "cli", round(param_count(MEDIUM) / ratio), [0, 23])
    assert abs(param_count(MEDIUM) / sol.params / ratio - 1) <= 0.03
    assert param_count(build(MEDIUM, "cli", sol.width, [0, 23])) == sol.params


def test_solver_counts_the_mlps_that_will_collapse():
    target = round(param_count(MEDIUM) / 2.47)
    plain = solve(MEDIUM, "cli", target, [0, 23])
    folded = solve(MEDIUM, "cli", target, [0, 23], collapse=[5, 6, 7])
    assert folded.width > plain.width  # the collapsed MLPs pay for a wider bottleneck
    config = build(MEDIUM, "cli", folded.width, [0, 23])
    config.mlp_kinds = ["collapsed" if i in (5, 6, 7) else k for i, k in enumerate(config.mlp_kinds)]
    assert param_count(config) == folded.params and abs(folded.error) <= 0.03


def test_unreachable_ratio_names_the_largest_reachable():
    with pytest.raises(ClidepError, match=r"largest reachable ratio (\d+\.\d+)") as err:
        solve(MEDIUM, "cli", round(param_count(MEDIUM) / 20), [0, 23])
    largest = float(err.value.args[0].rsplit("ratio ", 1)[1].rstrip(")"))
    solve(MEDIUM, "cli", round(param_count(MEDIUM) / largest), [0, 23])  # and that one is reachable


def test_cli_protects_the_critical_blocks_and_the_last():
    assert protected_blocks([3, 0], 12) == [0, 3, 11]
    assert protected_blocks([11], 12) == [11]
    assert schedule("cli", 4, 64, 16, [0, 3]) == [64, 16, 16, 64]
    assert schedule("uniform", 4, 64, 16, [0, 3]) == [16, 16, 16, 16]
    with pytest.raises(ClidepError, match="--protect names block 4, but the teacher has blocks 0..3"):
        schedule("cli", 4, 64, 16, [4])


@pytest.mark.parametrize(
    "width, preferred, expected", [(496, 64, 62), (560, 64, 70), (84, 64, 84), (96, 64, 48), (1024, 64, 64), (7, 64, 7)]
)
def test_narrow_heads_take_the_divisor_nearest_the_teachers(width, preferred, expected):
    assert head_size(width, preferred) == expected and width % expected == 0


def test_a_target_just_below_the_smallest_size_rounds_up_and_further_is_refused():
    sizes = [(100, "a"), (200, "b"), (300, "c")]
    assert nearest_size(sizes, 240) == (200, "b") and nearest_size(sizes, 98) == (100, "a")
    assert nearest_size(sizes, 96) is None, "more than 3% below the smallest"


#: Importance of GPT-2-medium-shaped blocks: block 0 far above the rest, the last next, a slope between.
SCORES = [40.0] + [1.0 + i / 10 for i in range(22)] + [8.0]


@pytest.mark.parametrize("ratio", [2.0, 2.47, 4.0])
@pytest.mark.parametrize("gamma", [0.25, 1.0, 4.0])
def test_auto_sizes_every_exponent_within_2_percent(ratio, gamma):
    target = round(param_count(MEDIUM) / ratio)
    sol = allocate(MEDIUM, SCORES, gamma, target)
    assert abs(sol.error) <= 0.02, sol.arithmetic
    assert all(w % AUTO_STEP == 0 and 1024 // 8 <= w <= 1024 for w in sol.widths)
    assert param_count(student_config(MEDIUM, sol.widths, schedule_head_dims(MEDIUM, sol.widths))) == sol.params


def test_auto_widths_follow_the_scores():
    sol = allocate(MEDIUM, SCORES, 0.5, round(param_count(MEDIUM) / 2.47))
    w = sol.widths
    assert w[0] == 1024, "the dominant block keeps the teacher's width"
    assert w[23] > max(w[1:23]), "the second most important block comes next"
    ranked = sorted(range(1, 23), key=lambda i: SCORES[i])
    assert all(w[b] >= w[a] - AUTO_STEP for a, b in zip(ranked, ranked[1:])), "wider with the score, up to one step"


def test_auto_gamma_zero_is_uniform_and_a_large_gamma_approaches_cli():
    target = round(param_count(MEDIUM) / 2.47)
    flat = allocate(MEDIUM, SCORES, 0.0, target)
    assert len(set(flat.widths)) == 1 and abs(flat.error) <= 0.02
    steep = allocate(MEDIUM, SCORES, 8.0, target)
    assert steep.widths[0] == steep.widths[23] == 1024 and steep.widths[1] == 128, (
        "like CLI: the most important blocks at the teacher's width, the least at the floor"
    )
    assert steep.widths[1:23] == sorted(steep.widths[1:23])
    assert "scores / max [1, 0.025" in steep.arithmetic and "^8" in steep.arithmetic


def test_auto_refuses_a_size_below_every_block_at_the_floor():
    with pytest.raises(
        ClidepError, match=r"an auto student cannot be as small as .* \(largest reachable ratio 6\.17\)"
    ):
        allocate(MEDIUM, SCORES, 1.0, round(param_count(MEDIUM) / 20))
