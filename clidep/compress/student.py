"""A planned run's student (run.json's plan): built and initialised from the teacher, distilled (resumable),
its MLPs collapsed where the plan says so, and saved as a from_pretrained folder with the run's record."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from clidep.compress.plan import RunPlan, student_config_of
from clidep.files import make_temp_dir, write_json


def distil_run(run: RunPlan, out: Path, resume: bool, log) -> dict:
    """Build, initialise, distil (and collapse) the student that RUN describes, writing it into OUT."""
    import torch

    from clidep.compress.collapse import regulariser
    from clidep.compress.corpus import batch as corpus_batch
    from clidep.compress.corpus import token_file
    from clidep.compress.distill import TrainConfig, train, validation_ids
    from clidep.compress.student_init import start_student
    from clidep.data import load_tokenizer
    from clidep.model.convert import load_model

    val_data = run.val_data or "wiki-en-valid"
    log(run.arithmetic)
    t0 = time.perf_counter()
    teacher_model = load_model(run.teacher)
    tokenizer = load_tokenizer(run.teacher, teacher_model.config.vocab_size)
    config = student_config_of(run, teacher_model.config)
    collapse_plan = run.collapse
    tokens_arr = token_file(tokenizer, run.data)
    init = None
    if run.schedule == "stock":
        from clidep.compress.student_init import init_stock

        init = lambda s, ids: init_stock(s, teacher_model, run.stock["kept_blocks"], ids)  # noqa: E731
    cfg = TrainConfig(**run.train)
    student = start_student(config, teacher_model, tokens_arr, cfg.seed, run.init == "teacher" and not resume, init)
    val_ids = validation_ids(tokenizer, val_data)
    reg = (lambda m: regulariser(m, collapse_plan["lc"])) if collapse_plan else None
    state = train(student, teacher_model, tokens_arr, val_ids, cfg, out, resume, log, reg)
    records, trained_ppl = None, state.ppl_curve[-1][1] if state.ppl_curve else None
    if collapse_plan:
        calib = torch.from_numpy(corpus_batch(tokens_arr, cfg.seed + 2, 0, 8, min(256, config.n_positions)))
        student, records, collapsed_ppl = _collapse(student, calib, collapse_plan["tol"], val_ids, trained_ppl, log)
        config = student.config
    _save_student(student, tokenizer, out, stock=run.schedule == "stock")
    collapsed = (records, collapsed_ppl) if collapse_plan else None
    result = _record(run, (teacher_model.config, config), state, (val_data, trained_ppl), collapsed)
    if result["val_ppl"] is not None:  # validated (--eval-every): the shipped files' figures beside fp32's
        result.update(_shipped(student.eval(), val_ids, result["val_ppl"], log))
    result["wall_seconds_this_invocation"] = round(time.perf_counter() - t0, 1)
    write_json(out / "compress.json", result)
    return result


def _record(run: RunPlan, configs: tuple, state, validation: tuple, collapsed: tuple | None) -> dict:
    """compress.json: RUN's choices, the teacher's and student's shapes (CONFIGS), the training STATE, the
    validation text and perplexity (VALIDATION), and LayerCollapse's records and perplexity after it (COLLAPSED)."""
    from clidep.model.params import param_count

    teacher_config, config = configs
    val_data, trained_ppl = validation
    teacher_params, student_params = param_count(teacher_config), param_count(config)
    return {
        "method": run.method,
        "teacher": run.teacher,
        "teacher_params": teacher_params,
        "student_params": student_params,
        "ratio": teacher_params / student_params,
        "layer_widths": config.layer_widths,
        "layer_head_dims": config.layer_head_dims,
        "mlp_kinds": config.mlp_kinds,
        "protected": run.protect,
        "protect_rule": run.protect_rule,
        "arithmetic": run.arithmetic,
        **({"auto": run.auto} if run.auto is not None else {}),
        **({"stock": {**run.stock, "model_type": "gpt2"}} if run.stock is not None else {}),
        "init": run.init,
        "data": run.data,
        "tokens_trained": state.tokens,
        "steps": state.step,
        "train": run.train,
        "val_data": val_data,
        "val_ppl": collapsed[1] if collapsed else trained_ppl,
        "ppl_curve": state.ppl_curve,
        "loss_curve": state.loss_curve,
        "seconds": round(state.seconds, 1),
        **(
            {
                "layercollapse": collapsed[0],
                "layercollapse_rule": run.collapse["rule"],
                "lc": run.collapse["lc"],
                "val_ppl_before_collapse": trained_ppl,
            }
            if collapsed
            else {}
        ),
    }


def _shipped(student, val_ids, fp32_ppl: float, log) -> dict:
    """The validation perplexity of the int8 and int4 files' weights (``shipped.py``), logged against fp32's:
    {"val_ppl_int8": ..., "val_ppl_int4": ...}."""
    from clidep.compress.shipped import REPORTED, ranked_by, shipped_ppl

    found = {p: shipped_ppl(student, val_ids, p) for p in REPORTED}
    log(
        "validation ppl of the files it ships (weights as ONNX Runtime's block quantiser stores them): "
        + ", ".join(f"{p} {ppl:.2f} ({ppl / fp32_ppl - 1:+.2%})" for p, ppl in found.items())
        + f", against fp32 {fp32_ppl:.2f}"
    )
    return {ranked_by(p): ppl for p, ppl in found.items()}


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
