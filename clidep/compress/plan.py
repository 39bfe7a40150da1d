"""Planning a compress run: every choice of a new run (the method's schedule, protected blocks, the blocks
LayerCollapse merges, the size target, the widths) resolved from the teacher and the settings into plain
data, the run plan that run.json holds and --resume reads back."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clidep.compress.blocks import ntk_report, resolve_collapse, resolve_protect
from clidep.compress.config import STOCK_METHODS, CompressConfig
from clidep.errors import ClidepError
from clidep.files import read_json
from clidep.records import Record


@dataclass
class RunPlan(Record):
    """A compress run with every choice resolved: what run.json holds and ``--resume`` reads back."""

    teacher: str  # the teacher's path or hub id
    method: str  # --method as asked (cli, uniform, auto, slim, depth, grid, layercollapse, ...)
    schedule: str  # how the widths are laid out: cli, uniform, auto, or stock (a GPT2LMHeadModel)
    width: int  # the bottleneck width (cli, uniform), the narrowest block's (auto), the stock student's
    protect: list[int]  # blocks kept at full width (cli; empty otherwise)
    protect_rule: str  # why those blocks
    init: str  # "teacher" (weights taken from the teacher) or "random"
    data: str  # the distillation text: a file, a shared text's name, or a hub text
    arithmetic: str  # how the size was reached, said in the log and kept in compress.json
    train: dict  # distill.TrainConfig's fields, steps included
    collapse: dict | None = None  # LayerCollapse: {layers, rule, lc, tol}
    stock: dict | None = None  # a stock student: width, kept_blocks, head_dim, mlp_inner and how they were chosen
    layer_widths: list[int] | None = None  # auto: per block width
    layer_head_dims: list[int] | None = None  # auto: per block head size
    auto: dict | None = None  # auto's search: scorer, gamma, trials, search_steps
    val_data: str | None = None  # the validation text (None in runs written before it was recorded: wiki-en-valid)
    options: dict | None = None  # the call: {teacher, **CompressConfig.to_dict()}, which --resume compares
    extra: dict[str, Any] = field(default_factory=dict)


def read_run(path: Path) -> RunPlan:
    """The run plan at PATH (run.json); ``ClidepError`` when it is not one."""
    record = read_json(path, "compress run (run.json)")
    try:
        return RunPlan.from_dict(record)
    except TypeError:  # a required field is missing
        raise ClidepError(f"'{path}' is not a valid compress run (it lacks fields a run plan holds)") from None


def student_config_of(run: RunPlan, tconf):
    """The student RUN describes, as a config of the teacher's family (widths, heads, MLP kinds)."""
    from clidep.compress.widths import build, student_config

    if run.schedule == "stock":
        from clidep.compress.stock import stock_config

        shape = run.stock
        return stock_config(
            tconf, shape["width"], len(shape["kept_blocks"]), shape.get("head_dim"), shape.get("mlp_inner")
        )
    if run.schedule == "auto":
        config = student_config(tconf, run.layer_widths, run.layer_head_dims)
    else:
        config = build(tconf, run.schedule, run.width, run.protect)
    plan = run.collapse
    if plan:
        config.mlp_kinds = ["linearizing" if i in plan["layers"] else k for i, k in enumerate(config.mlp_kinds)]
    return config


def plan(teacher: str, c: CompressConfig) -> RunPlan:
    """Resolve every choice of a new run into plain data (run.json)."""
    from dataclasses import fields

    from clidep.compress.distill import TrainConfig

    tconf = teacher_config(teacher, c.seq_len)
    n = tconf.n_layer
    data = _training_text(c)
    schedule = c.method if c.method in ("uniform", "auto") else "stock" if c.method in STOCK_METHODS else "cli"
    auto = (c.protect if schedule == "cli" else "", c.layers if "layercollapse" in c.method else "")
    report = ntk_report(teacher) if "auto" in auto else None
    if schedule != "cli":
        protected, rule = [], f"{c.method}: no block is protected"
    else:
        protected, rule = resolve_protect(c.protect, teacher, n, report)
    budget = None
    if c.max_decode_ms is not None or c.max_mb is not None:
        from clidep.compress.budget import target as budget_target

        budget = budget_target(tconf, c.device, c.precision, c.max_decode_ms, c.max_mb)
    target = budget.target if budget else target_params(tconf, c)
    collapse_plan = None
    if "layercollapse" in c.method:
        candidates = [i for i in range(n) if i not in protected]
        fit = (tconf, target) if c.method == "layercollapse" and target is not None else None
        chosen, why = resolve_collapse(c.layers, teacher, candidates, n, report, fit)
        collapse_plan = {"layers": chosen, "rule": why, "lc": c.lc, "tol": c.collapse_tol}
    r, arithmetic, widths = _widths(schedule, teacher, tconf, target, c, data, protected, collapse_plan)
    steps = c.steps if c.steps is not None else max(1, math.ceil(c.tokens / (c.batch_size * c.seq_len)))
    train = {f.name: getattr(c, f.name) for f in fields(TrainConfig) if f.name != "steps"}
    if budget:
        arithmetic = f"{budget.arithmetic}\n{arithmetic}"
    return RunPlan(
        teacher=str(teacher),
        method=c.method,
        schedule=schedule,
        width=r,
        protect=protected,
        protect_rule=rule,
        init=c.init,
        data=data,
        arithmetic=f"protected blocks: {rule}\n{arithmetic}",
        train={"steps": steps, **train},
        collapse=collapse_plan,
        **widths,
    )


def _training_text(c: CompressConfig) -> str:
    """--data, else the offline Wikipedia text, or where this machine has no offline folder the hub's
    WikiText-103; an empty, binary or missing file fails now, before run.json exists."""
    from clidep.data import HUB_TEXTS, hub_fallback, read_corpus, shared_path

    data = c.data
    if data is None:
        data = "wiki-en" if hub_fallback("wiki-en") else str(shared_path("wiki-en"))
    if data not in HUB_TEXTS:
        read_corpus(data)
    return data


def _widths(schedule: str, teacher: str, tconf, target, c: CompressConfig, data, protected, collapse_plan):
    """(the student's width, the arithmetic that found it, the plan's width fields) for SCHEDULE: a stock
    student's search (compress/stock.py), the auto schedule's (compress/auto.py), or CLI/uniform's width."""
    if schedule == "stock":
        from clidep.compress import stock

        found, arms = stock.plan(c.method, teacher, tconf, target, c.width, c.depth_scorer, c, data)
        if c.match is not None and abs(found.params / target - 1) > 0.02:
            raise ClidepError(
                f"no {c.method} student matches {c.match} within 2% ({found.params / target - 1:+.2%}); "
                f"{found.arithmetic}"
            )
        return found.width, found.arithmetic, {"stock": arms}
    if schedule == "auto":
        from clidep.compress import auto as auto_widths

        found = auto_widths.plan(teacher, tconf, target, c, data)
        if c.match is not None and abs(found["error"]) > 0.02:
            raise ClidepError(
                f"no auto schedule matches {c.match} within 2% ({found['error']:+.2%}); {found['arithmetic']}"
            )
        widths = {
            "layer_widths": found["layer_widths"],
            "layer_head_dims": found["layer_head_dims"],
            "auto": {k: found[k] for k in ("scorer", "gamma", "trials", "search_steps")},
        }
        return min(found["layer_widths"]), found["arithmetic"], widths
    r, arithmetic = width_for(tconf, c, schedule, protected, target, collapse_plan)
    return r, arithmetic, {}


def teacher_config(teacher: str, seq_len: int):
    """The teacher's config as a full-width clidep config; refuses anything else."""
    from transformers import AutoConfig

    from clidep.model import modeling  # noqa: F401 - registers cli_gpt2
    from clidep.model.convert import config_from_gpt2

    try:
        tconf = AutoConfig.from_pretrained(teacher, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ClidepError(f"cannot load teacher '{teacher}': not a model directory or reachable hub id") from exc
    if tconf.model_type == "gpt2":
        tconf = config_from_gpt2(tconf)
    elif tconf.model_type != "cli_gpt2" or tconf.layer_widths != [tconf.n_embd] * tconf.n_layer:
        raise ClidepError(f"teacher '{teacher}' must be a full-width GPT-2 (or an identity-schedule clidep model)")
    if seq_len > tconf.n_positions:
        raise ClidepError(f"--seq-len {seq_len} exceeds the teacher's {tconf.n_positions} positions")
    return tconf


def target_params(tconf, c: CompressConfig) -> int | None:
    """The student's parameter target from --match, --ratio or --params (None for --width or none)."""
    from transformers import AutoConfig

    from clidep.model.params import param_count

    teacher_params, target = param_count(tconf), None
    if c.match is not None:
        from clidep.model.convert import config_from_gpt2

        mfile = Path(c.match) / "config.json"
        kind = json.loads(mfile.read_text()).get("model_type") if mfile.is_file() else None
        if kind not in ("cli_gpt2", "gpt2"):
            raise ClidepError(
                f"--match {c.match} is not a clidep student or GPT-2 directory (no cli_gpt2 or gpt2 config.json)"
            )
        mconf = AutoConfig.from_pretrained(c.match, trust_remote_code=False)
        target = param_count(config_from_gpt2(mconf) if kind == "gpt2" else mconf)
    elif c.ratio is not None or c.params is not None:
        target = int(c.params) if c.params is not None else round(teacher_params / c.ratio)
    if target is not None and target >= teacher_params:
        raise ClidepError(
            f"the target of {target:,} parameters is not below the teacher's {teacher_params:,}: nothing to compress"
        )
    if c.width is not None and c.width >= tconf.n_embd:
        raise ClidepError(f"--width {c.width} must be below the teacher's width {tconf.n_embd}")
    return target


def width_for(
    tconf, c: CompressConfig, schedule: str, protected: list[int], target: int | None, collapse_plan: dict | None
) -> tuple[int, str]:
    """The bottleneck width and the arithmetic line that explains it."""
    from clidep.compress.widths import build, solve
    from clidep.model.params import param_count

    teacher_params = param_count(tconf)
    if c.method == "layercollapse":
        return tconf.n_embd, (
            f"layercollapse: full width; MLPs of blocks {collapse_plan['layers']} train towards linear "
            f"({collapse_plan['rule']})"
        )
    if c.width is not None:
        size = param_count(build(tconf, schedule, c.width, protected))
        arithmetic = f"{c.method}: explicit width {c.width}: {size:,} parameters, ratio {teacher_params / size:.3f}"
        r = c.width
    else:
        sol = solve(tconf, schedule, target, protected, collapse_plan["layers"] if collapse_plan else ())
        if c.match is not None and abs(sol.error) > 0.02:
            raise ClidepError(f"no {c.method} width matches {c.match} within 2% ({sol.error:+.2%}); {sol.arithmetic}")
        r, arithmetic = sol.width, sol.arithmetic
    if collapse_plan:
        arithmetic += (
            f"\nlayercollapse: MLPs of blocks {collapse_plan['layers']} train towards linear ({collapse_plan['rule']})"
        )
    return r, arithmetic
