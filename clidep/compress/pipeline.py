"""``clidep compress``: size a CLI or uniform student, initialise it, distil it, save it.

OUT becomes a ``from_pretrained`` directory (config.json, model.safetensors, tokenizer) with
``compress.json`` beside it. ``run.json`` (written first) holds the resolved settings, so
``--resume`` continues exactly the run that was started.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

from clidep.compress.config import STOCK_METHODS, CompressConfig
from clidep.compress.widths import nearest_size, protected_blocks
from clidep.errors import ClidepError
from clidep.files import check_output, make_temp_dir, read_json, swap_into_place, write_json
from clidep.options import resolve


def ntk_report(teacher_path: str) -> dict:
    """A quick NTK analysis of the teacher (4 x 64 tokens, 8 probes) for the automatic choices."""
    from clidep.compress.analyze import analyze

    return analyze(teacher_path, samples=4, seq_len=64, probes=8, method="ntk")


def parse_blocks(text: str, n_layer: int, option: str) -> list[int]:
    from clidep.options import refuse_duplicates

    try:
        given = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ClidepError(f"{option} must be auto or block numbers like 0,{n_layer - 1}; got '{text}'") from None
    refuse_duplicates(given, option)
    chosen = sorted(given)
    bad = [p for p in chosen if not 0 <= p < n_layer]
    if bad:
        raise ClidepError(f"{option} names block {bad[0]}, but the teacher has blocks 0..{n_layer - 1}")
    return chosen


def resolve_protect(protect: str, teacher_path: str, n_layer: int, report=None) -> tuple[list[int], str]:
    """The protected blocks for CLI: ``auto`` (NTK analysis + the last block), an importance.json
    (file or directory from clidep analyze, + the last block), or an explicit comma list."""
    last = n_layer - 1
    if protect == "auto":
        report = report or ntk_report(teacher_path)
        chosen = protected_blocks(report["critical_layers"], n_layer)
        return (
            chosen,
            f"auto: NTK critical layers {report['critical_layers']} ({report['rule']}) plus the last block {last}, which restores the width",
        )
    path = Path(protect)
    if path.is_dir():
        path = path / "importance.json"
    if path.suffix == ".json":
        report = read_json(path, "importance report (--protect)")
        if not isinstance(report.get("critical_layers"), list):
            raise ClidepError(f"--protect: '{path}' holds no critical_layers; re-run clidep analyze")
        return protected_blocks(
            report["critical_layers"], n_layer
        ), f"from {path}: critical layers {report['critical_layers']} plus the last block {last}"
    chosen = parse_blocks(protect, n_layer, "--protect")
    return chosen, f"given: {chosen}"


def resolve_collapse(
    layers: str, teacher_path: str, candidates: list[int], n_layer: int, report=None, size: tuple | None = None
) -> tuple[list[int], str]:
    """The blocks whose MLPs train towards linear, least important (NTK) first: with ``auto`` the
    less important half of CANDIDATES, or, when SIZE = (teacher config, target parameters) is given
    (--method layercollapse with --ratio/--params/--match), the fewest that bring the full-width
    student to the target once collapsed. Otherwise an explicit comma list."""
    if layers != "auto":
        return parse_blocks(layers, n_layer, "--layers"), "given"
    report = report or ntk_report(teacher_path)
    ntk = {s["layer"]: s["ntk"] for s in report["scores"]}
    ranked = sorted(candidates, key=lambda i: ntk[i])
    if size is None:
        chosen = sorted(ranked[: max(1, len(ranked) // 2)])
        return chosen, f"auto: the {len(chosen)} least important of blocks {candidates} by NTK score"
    from clidep.compress.widths import student_config
    from clidep.model.params import param_count

    tconf, target = size
    counts = [
        param_count(
            student_config(
                tconf,
                tconf.layer_widths,
                tconf.layer_head_dims,
                ["collapsed" if i in ranked[:k] else "standard" for i in range(n_layer)],
            )
        )
        for k in range(len(ranked) + 1)
    ]  # counts[k]: the k least important MLPs collapsed
    best = nearest_size([(counts[k], k) for k in range(1, len(counts))], target)
    if best is None:
        raise ClidepError(
            f"layercollapse alone cannot reach {target:,} parameters: collapsing every unprotected MLP {ranked} leaves "
            f"{counts[-1]:,} (largest reachable ratio {counts[0] / counts[-1]:.2f}); use --method cli+layercollapse"
        )
    k = best[1]
    chosen = sorted(ranked[:k])
    return chosen, (
        f"auto: the {k} least important of blocks {candidates} by NTK score, the number whose collapse comes "
        f"nearest {target:,} parameters ({counts[k]:,}, ratio {counts[0] / counts[k]:.3f})"
    )


def compress(
    teacher: str,
    out: str | Path,
    config: CompressConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log=print,
    **options,
) -> dict:
    """Compress TEACHER into a student and distil it into OUT; returns compress.json's content.

    CONFIG (a ``CompressConfig``), or its fields given as keywords (``method="cli", width=32,
    steps=100, ...``), says what: METHOD cli, uniform, layercollapse (full width; the MLPs of
    LAYERS train towards linear under lc * (1 - alpha)^2 and collapse when |1 - alpha| <=
    COLLAPSE_TOL) or cli+layercollapse; sized by exactly one of RATIO, PARAMS, WIDTH or MATCH;
    trained for TOKENS or STEPS steps of BATCH_SIZE x SEQ_LEN tokens.

    Every setting is checked before any work; an existing OUT is replaced (OVERWRITE) only once
    the new student is complete, and a run that fails before its first checkpoint leaves nothing.
    RESUME continues the run in OUT and refuses settings that differ from the stored ones.
    """
    import contextlib

    from accelerate import PartialState

    from clidep.locks import write_lock

    config = resolve(CompressConfig, config, options)
    out = Path(out)
    with write_lock(out, log) if PartialState().is_main_process else contextlib.nullcontext():
        return _run(str(teacher), out, config, resume, overwrite, log)


def _run(teacher: str, out: Path, config: CompressConfig, resume: bool, overwrite: bool, log) -> dict:
    """compress's work, with OUT's lock held by the main process."""
    from accelerate import PartialState

    from clidep.compress.distill import latest_checkpoint

    partial = out.parent / f".{out.name}.partial"
    # What a new run creates, so that a signal while it starts (run.json written, training not begun) removes
    # it too: under load a SIGHUP landed there and left OUT behind, blocking the same command.
    created = [] if resume else [p for p in (out, partial) if not p.exists()]
    work, main = None, PartialState().is_main_process
    try:
        run, work, main = _start(teacher, out, partial, config, resume, overwrite, log)
        result = _distil(run, work, resume, log)
    except BaseException:
        ckpt = latest_checkpoint(work) if main and work else None
        if main and not resume and ckpt is None:
            for path in {*created, *([work] if work else [])}:  # nothing worth resuming: nothing that blocks a rerun
                shutil.rmtree(path, ignore_errors=True)
        elif ckpt is not None:
            log(
                f"{work} keeps the checkpoint at step {_checkpoint_step(ckpt)}: run the same command with --resume "
                + ("(instead of --overwrite) " if work != out else "")
                + "to continue from it"
            )
        raise
    if main and work != out:
        swap_into_place(work, out)
    return result


def _checkpoint_step(ckpt: Path) -> int | str:
    try:
        return json.loads((ckpt / "trainer_state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return "?"


def _start(
    teacher: str, out: Path, partial: Path, config: CompressConfig, resume: bool, overwrite: bool, log
) -> tuple[dict, Path, bool]:
    """(run settings, working directory, is-main-process) of a new or resumed run.

    The main process checks everything and writes run.json; the others (``accelerate launch``)
    wait for it and read it. A new run over an existing OUT works in a sibling directory that
    replaces OUT at the end.
    """
    from accelerate import PartialState

    state = PartialState()
    if resume:
        work = _resumable(out, partial)
        run = read_json(work / "run.json", "compress run (run.json)")
        _same_settings(run, teacher, config)
        log(
            f"resuming the run in {work} (settings from run.json)"
            + (f"; it replaces {out} when done" if work != out else "")
        )
        return run, work, state.is_main_process
    failure = None
    if state.is_main_process:
        try:
            run, work = _new_run(teacher, out, partial, config, overwrite)
        except Exception as exc:  # release the other processes before raising
            failure = exc
    state.wait_for_everyone()
    if failure is not None:
        raise failure
    if not state.is_main_process:
        work = partial if (partial / "run.json").is_file() else out
        if not (work / "run.json").is_file():
            raise ClidepError("the main process refused these settings; see its error")
        run = read_json(work / "run.json", "compress run (run.json)")
    return run, work, state.is_main_process


def _resumable(out: Path, partial: Path) -> Path:
    """Where --resume continues: the interrupted run of an --overwrite beside OUT (.OUT.partial) when it
    has a checkpoint, else OUT itself; ``ClidepError`` saying what to run when neither can be resumed."""
    from clidep.compress.distill import latest_checkpoint

    for work in (partial, out):
        if (work / "run.json").is_file() and latest_checkpoint(work) is not None:
            return work
    if (out / "run.json").is_file() or (partial / "run.json").is_file():
        raise ClidepError(
            f"--resume: the run in {out} stopped before its first checkpoint (one every --save-every "
            "steps), so there is nothing to continue: run the same command with --overwrite instead"
        )
    raise ClidepError(f"--resume: {out} holds no run to resume (no run.json)")


def _new_run(teacher: str, out: Path, partial: Path, config: CompressConfig, overwrite: bool) -> tuple[dict, Path]:
    """Check OUT and the inputs, resolve the plan, and write run.json into the working directory."""
    from clidep.compress.distill import latest_checkpoint
    from clidep.data import read_text

    if not overwrite and latest_checkpoint(partial) is not None:
        raise ClidepError(
            f"'{out}' has an interrupted run beside it ({partial}); pass --resume to continue it, or "
            "--overwrite to start again"
        )
    if (out / "run.json").is_file() and not overwrite:
        raise ClidepError(
            f"'{out}' holds a compress run; pass --resume to continue it or --overwrite to replace it "
            "once the new student is complete"
        )
    config.check_new_run()
    check_output(out, [teacher, config.match, config.data], overwrite=overwrite)
    run = {**_plan(teacher, config), "val_data": config.val_data, "options": {"teacher": teacher, **config.to_dict()}}
    read_text(config.val_data)  # fails now, not after training, when the validation text is unusable
    _check_space(run, out, config)
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted --overwrite: ours to remove
    work = partial if out.is_dir() and any(out.iterdir()) else out
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "run.json", run)
    return run, work


def _check_space(run: dict, out: Path, config: CompressConfig) -> None:
    """Refuse a run whose files cannot fit beside OUT: the student (4 bytes a parameter) and, while one
    checkpoint replaces another, two checkpoints of the model and AdamW's two moments (12 bytes a
    parameter each), plus 2 MB of tokenizer and records."""
    from clidep.files import free_space_check
    from clidep.model.params import param_count

    params = param_count(_student_config(run, _teacher_config(run["teacher"], config.seq_len)))
    checkpoints = 2 if config.save_every else 0
    free_space_check(
        out.parent,
        4 * params + checkpoints * 12 * params + 2_000_000,
        f"this compress run ({params:,} parameters, {checkpoints} checkpoints at a time)",
    )


def _student_config(run: dict, tconf):
    """The student RUN describes, as a config of the teacher's family (widths, heads, MLP kinds)."""
    from clidep.compress.widths import build, student_config

    if run["schedule"] == "stock":
        from clidep.compress.stock import stock_config

        return stock_config(tconf, run["stock"]["width"], len(run["stock"]["kept_blocks"]))
    if run["schedule"] == "auto":
        config = student_config(tconf, run["layer_widths"], run["layer_head_dims"])
    else:
        config = build(tconf, run["schedule"], run["width"], run["protect"])
    plan = run.get("collapse")
    if plan:
        config.mlp_kinds = ["linearizing" if i in plan["layers"] else k for i, k in enumerate(config.mlp_kinds)]
    return config


def _same_settings(run: dict, teacher: str, config: CompressConfig) -> None:
    """``--resume`` continues the stored run: an option given with another value than it had is refused.

    Options left at their defaults are not compared (the stored run's values apply).
    """
    stored = run.get("options")
    if stored is None:
        return  # a run.json written before options were recorded: nothing to compare
    changed = config.changed(stored)
    if teacher != stored.get("teacher", teacher):
        changed.insert(0, ("TEACHER", teacher, stored["teacher"]))
    if changed:
        said = ", ".join(f"{name} {value} (the run has {was})" for name, value, was in changed)
        raise ClidepError(
            f"--resume continues the stored run, but this call changes {said}; "
            "drop those options, or start a new run with --overwrite"
        )


# Over a screen because half of it is the compress.json record, written out field by field.
def _distil(run: dict, out: Path, resume: bool, log) -> dict:
    """Build, initialise, distil (and collapse) the student that RUN describes, writing it into OUT."""
    import torch

    from clidep.compress.collapse import regulariser
    from clidep.compress.corpus import batch as corpus_batch
    from clidep.compress.corpus import token_file
    from clidep.compress.distill import TrainConfig, train, validation_ids
    from clidep.compress.student_init import start_student
    from clidep.data import load_tokenizer
    from clidep.model.convert import load_model
    from clidep.model.params import param_count

    val_data = run.get("val_data", "wiki-en-valid")
    log(run["arithmetic"])
    t0 = time.perf_counter()
    teacher_model = load_model(run["teacher"])
    tokenizer = load_tokenizer(run["teacher"], teacher_model.config.vocab_size)
    config = _student_config(run, teacher_model.config)
    collapse_plan = run.get("collapse")
    tokens_arr = token_file(tokenizer, run["data"])
    init = None
    if run["schedule"] == "stock":
        from clidep.compress.stock import init_stock

        init = lambda s, ids: init_stock(s, teacher_model, run["stock"]["kept_blocks"], ids)  # noqa: E731
    student = start_student(
        config, teacher_model, tokens_arr, run["train"]["seed"], run["init"] == "teacher" and not resume, init
    )
    val_ids = validation_ids(tokenizer, val_data)
    cfg = TrainConfig(**run["train"])
    reg = (lambda m: regulariser(m, collapse_plan["lc"])) if collapse_plan else None
    state = train(student, teacher_model, tokens_arr, val_ids, cfg, out, resume, log, reg)
    records, trained_ppl = None, state.ppl_curve[-1][1] if state.ppl_curve else None
    if collapse_plan:
        calib = torch.from_numpy(corpus_batch(tokens_arr, run["train"]["seed"] + 2, 0, 8, min(256, config.n_positions)))
        student, records, collapsed_ppl = _collapse(student, calib, collapse_plan["tol"], val_ids, trained_ppl, log)
        config = student.config
    _save_student(student, tokenizer, out, stock=run["schedule"] == "stock")
    teacher_params = param_count(teacher_model.config)
    student_params = param_count(config)
    result = {
        "method": run["method"],
        "teacher": run["teacher"],
        "teacher_params": teacher_params,
        "student_params": student_params,
        "ratio": teacher_params / student_params,
        "layer_widths": config.layer_widths,
        "layer_head_dims": config.layer_head_dims,
        "mlp_kinds": config.mlp_kinds,
        "protected": run["protect"],
        "protect_rule": run["protect_rule"],
        "arithmetic": run["arithmetic"],
        **({"auto": run["auto"]} if "auto" in run else {}),
        **({"stock": {**run["stock"], "model_type": "gpt2"}} if "stock" in run else {}),
        "init": run["init"],
        "data": run["data"],
        "tokens_trained": state.tokens,
        "steps": state.step,
        "train": run["train"],
        "val_data": val_data,
        "val_ppl": collapsed_ppl if collapse_plan else trained_ppl,
        "ppl_curve": state.ppl_curve,
        "loss_curve": state.loss_curve,
        "seconds": round(state.seconds, 1),
        **(
            {
                "layercollapse": records,
                "layercollapse_rule": collapse_plan["rule"],
                "lc": collapse_plan["lc"],
                "val_ppl_before_collapse": trained_ppl,
            }
            if collapse_plan
            else {}
        ),
        "wall_seconds_this_invocation": round(time.perf_counter() - t0, 1),
    }
    write_json(out / "compress.json", result)
    return result


def _collapse(student, calib, tol: float, val_ids, trained_ppl: float | None, log):
    """LayerCollapse after training: (collapsed student, per-layer records, its validation perplexity)."""
    from clidep.compress.collapse import collapse
    from clidep.compress.distill import validation_ppl

    student, records = collapse(student, calib, tol)
    for r in records:
        log(
            f"block {r['layer']}: alpha {r['alpha']:.3f}, "
            + (
                f"collapsed, max |logit diff| {r['max_logit_diff']:.3g} (bound {r['error_bound']:.3g})"
                if r["collapsed"]
                else f"left uncollapsed: {r['reason']}"
            )
        )
    # The per-layer figures above measure each collapse alone; together they compound, so the
    # collapsed model is scored again on the validation text with the loop's protocol.
    collapsed_ppl = validation_ppl(student, val_ids)
    log(f"validation ppl {trained_ppl or float('nan'):.2f} before the collapse, {collapsed_ppl:.2f} after")
    return student, records, collapsed_ppl


def _save_student(student, tokenizer, out: Path, stock: bool = False) -> None:
    """Model files into a temporary sibling, then renamed into OUT (compress.json is written last); a STOCK
    student as a GPT2LMHeadModel (config.json of model_type gpt2, no clidep code)."""
    from safetensors import SafetensorError

    from clidep.compress.distill import write_failed
    from clidep.model.convert import to_gpt2

    tmp = make_temp_dir(out / "final")
    try:
        (to_gpt2(student) if stock else student).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            f.replace(out / f.name)
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise write_failed(f"the student into {out}", out, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _plan(teacher: str, c: CompressConfig) -> dict:
    """Resolve every choice of a new run into plain data (run.json)."""
    from dataclasses import fields

    from clidep.compress.distill import TrainConfig
    from clidep.data import HUB_TEXTS, hub_fallback, read_corpus, shared_path

    tconf = _teacher_config(teacher, c.seq_len)
    n = tconf.n_layer
    data = c.data
    if data is None:  # the offline Wikipedia text, or where this machine has no offline folder the hub's WikiText-103
        data = "wiki-en" if hub_fallback("wiki-en") else str(shared_path("wiki-en"))
    if data not in HUB_TEXTS:
        read_corpus(data)  # an empty, binary or missing --data fails now, before run.json exists
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
    target = budget.target if budget else _target(tconf, c)
    collapse_plan, widths = None, {}
    if "layercollapse" in c.method:
        candidates = [i for i in range(n) if i not in protected]
        fit = (tconf, target) if c.method == "layercollapse" and target is not None else None
        chosen, why = resolve_collapse(c.layers, teacher, candidates, n, report, fit)
        collapse_plan = {"layers": chosen, "rule": why, "lc": c.lc, "tol": c.collapse_tol}
    if schedule == "stock":
        from clidep.compress import stock

        found, widths["stock"] = stock.plan(c.method, teacher, tconf, target, c.width, c.depth_scorer, c, data)
        if c.match is not None and abs(found.params / target - 1) > 0.02:
            raise ClidepError(
                f"no {c.method} student matches {c.match} within 2% ({found.params / target - 1:+.2%}); "
                f"{found.arithmetic}"
            )
        r, arithmetic = found.width, found.arithmetic
    elif schedule == "auto":
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
        r, arithmetic = min(found["layer_widths"]), found["arithmetic"]
    else:
        r, arithmetic = _width(tconf, c, schedule, protected, target, collapse_plan)
    steps = c.steps if c.steps is not None else max(1, math.ceil(c.tokens / (c.batch_size * c.seq_len)))
    train = {f.name: getattr(c, f.name) for f in fields(TrainConfig) if f.name != "steps"}
    if budget:
        arithmetic = f"{budget.arithmetic}\n{arithmetic}"
    return {
        "teacher": str(teacher),
        "method": c.method,
        "schedule": schedule,
        "collapse": collapse_plan,
        "width": r,
        **widths,
        "protect": protected,
        "protect_rule": rule,
        "init": c.init,
        "data": data,
        "arithmetic": f"protected blocks: {rule}\n{arithmetic}",
        "train": {"steps": steps, **train},
    }


def _teacher_config(teacher: str, seq_len: int):
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


def _target(tconf, c: CompressConfig) -> int | None:
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


def _width(
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
