"""``clidep compress``: size a CLI or uniform student, initialise it, distil it, save it.

OUT becomes a ``from_pretrained`` directory (config.json, model.safetensors, tokenizer) with
``compress.json`` beside it. ``run.json`` (written first) holds the resolved settings, so
``--resume`` continues exactly the run that was started.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clidep.compress.config import CompressConfig
from clidep.errors import ClidepError
from clidep.files import check_output, swap_into_place, write_json
from clidep.options import resolve
from clidep.progress import say

if TYPE_CHECKING:
    from clidep.compress.plan import RunPlan


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
    from clidep.compress.student import distil_run

    partial = out.parent / f".{out.name}.partial"
    # What a new run creates, so that a signal while it starts (run.json written, training not begun) removes
    # it too: under load a SIGHUP landed there and left OUT behind, blocking the same command.
    created = [] if resume else [p for p in (out, partial) if not p.exists()]
    work, main = None, PartialState().is_main_process
    try:
        run, work, main = _start(teacher, out, partial, config, resume, overwrite, log)
        result = distil_run(run, work, resume, log)
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
) -> tuple[RunPlan, Path, bool]:
    """(run settings, working directory, is-main-process) of a new or resumed run.

    The main process checks everything and writes run.json; the others (``accelerate launch``)
    wait for it and read it. A new run over an existing OUT works in a sibling directory that
    replaces OUT at the end.
    """
    from accelerate import PartialState

    from clidep.compress import plan

    state = PartialState()
    if resume:
        work = _resumable(out, partial)
        run = plan.read_run(work / "run.json")
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
        run = plan.read_run(work / "run.json")
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


def _new_run(teacher: str, out: Path, partial: Path, config: CompressConfig, overwrite: bool) -> tuple[RunPlan, Path]:
    """Check OUT and the inputs, resolve the plan, and write run.json into the working directory."""
    from clidep.compress import plan
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
    run = plan.plan(teacher, config)
    run.val_data, run.options = config.val_data, {"teacher": teacher, **config.to_dict()}
    read_text(config.val_data)  # fails now, not after training, when the validation text is unusable
    _check_space(run, out, config)
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted --overwrite: ours to remove
    work = partial if out.is_dir() and any(out.iterdir()) else out
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "run.json", run.to_dict())
    return run, work


def _check_space(run: RunPlan, out: Path, config: CompressConfig) -> None:
    """Refuse a run whose files cannot fit beside OUT: the student (4 bytes a parameter) and, while one
    checkpoint replaces another, two checkpoints of the model and AdamW's two moments (12 bytes a
    parameter each), plus 2 MB of tokenizer and records."""
    from clidep.compress import plan
    from clidep.files import free_space_check
    from clidep.model.params import param_count

    params = param_count(plan.student_config_of(run, plan.teacher_config(run.teacher, config.seq_len)))
    checkpoints = 2 if config.save_every else 0
    free_space_check(
        out.parent,
        4 * params + checkpoints * 12 * params + 2_000_000,
        f"this compress run ({params:,} parameters, {checkpoints} checkpoints at a time)",
    )


def _same_settings(run: RunPlan, teacher: str, config: CompressConfig) -> None:
    """``--resume`` continues the stored run: an option given with another value than it had is refused.

    Options left at their defaults are not compared (the stored run's values apply).
    """
    stored = run.options
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


def command(
    teacher: Annotated[str, typer.Argument(help="Teacher: a GPT-2 directory or hub id (full width).")],
    out: Annotated[Path, typer.Option(help="Output: a from_pretrained directory plus compress.json.")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUT from its last checkpoint.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT once the new student is complete.")
    ] = False,
    *,
    options,
) -> None:
    """Build a student of TEACHER (by default a stock GPT-2 whose shape every quantiser takes whole; or CLI,
    a uniform bottleneck, LayerCollapse, ...), initialise it from the teacher, and distil it (Accelerate).

    Runs on CPU, one GPU or several processes: `accelerate launch -m clidep compress ...`.
    """
    result = compress(teacher, out, options, resume=resume, overwrite=overwrite, log=say)
    summary = {
        k: result[k]
        for k in (
            "method",
            "student_params",
            "ratio",
            "layer_widths",
            "protected",
            "init",
            "tokens_trained",
            "val_ppl",
            "val_ppl_int8",
            "val_ppl_int4",
            "seconds",
        )
        if k in result  # the shipped files' figures only where the run validated (--eval-every)
    }
    print(json.dumps(summary))
