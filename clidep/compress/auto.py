"""``--method auto``: per-block widths from importance scores, the exponent chosen by a short distillation.

Each candidate (a scorer and an exponent gamma, see ``widths.allocate``) is sized to the same
target, initialised from the teacher and distilled for ``--search-steps`` steps on the training
text; its perplexity on the validation text (wiki-en/valid.txt by default, never the test text),
with its weights as the ``--precision`` file will hold them (``shipped.py``), picks the schedule.
gamma 0 (the uniform bottleneck) is always among the candidates, so auto falls back to uniform
when no allocation beats it on this proxy.
"""

from __future__ import annotations

import numpy as np


def candidates(scorers: tuple[str, ...], gammas: tuple[float, ...]) -> list[tuple[str, float]]:
    """(scorer, gamma) pairs of --scorer and --gamma (checked by CompressConfig); gamma 0 once, scorer '-'
    (it ignores them)."""
    exps = sorted(gammas)
    return [("-", 0.0)] * (0.0 in exps) + [(s, g) for g in exps if g > 0 for s in scorers]


def plan(teacher: str, tconf, target: int, c, data: str, log=print) -> dict:
    """The auto schedule for TEACHER at TARGET parameters under the settings C (a CompressConfig):
    widths, head sizes, the chosen scorer and gamma, every trial, and the arithmetic."""
    from clidep.compress.analyze import quick_analysis
    from clidep.compress.shipped import ranked_by
    from clidep.compress.widths import allocate, schedule_head_dims

    cands = candidates(c.scorer, c.gamma)
    scorers = sorted({s for s, _ in cands if s != "-"})
    report = quick_analysis(teacher, scorers[0] if len(scorers) == 1 else "all", tconf.n_positions) if scorers else None
    scores = {s: [row[_SCORE_KEY[s]] for row in report["scores"]] for s in scorers}
    sols = {(s, g): allocate(tconf, scores.get(s, [1.0] * tconf.n_layer), g, target) for s, g in cands}
    trials = []
    if len(cands) > 1:
        log(f"auto: {len(cands)} candidates, {c.search_steps} distillation steps each, scored on {c.val_data}")
        trials = _search(teacher, tconf, sols, c, data, log)
        chosen = min(trials, key=lambda t: t[ranked_by(c.precision)])
        key = (chosen["scorer"], chosen["gamma"])
    else:
        key = cands[0]
    sol = sols[key]
    scorer, gamma = key
    why = (
        (
            f"chosen from {len(trials)} candidates by {c.precision} validation ppl after {c.search_steps} steps: "
            + ", ".join(f"{t['scorer']}^{t['gamma']:g} {t[ranked_by(c.precision)]:.2f}" for t in trials)
        )
        if trials
        else "given"
    )
    return {
        "layer_widths": sol.widths,
        "layer_head_dims": schedule_head_dims(tconf, sol.widths),
        "scorer": scorer,
        "gamma": gamma,
        "trials": trials,
        "search_steps": c.search_steps if trials else 0,
        "arithmetic": f"{sol.arithmetic}\nauto: scorer {scorer}, gamma {gamma:g} ({why})",
        "params": sol.params,
        "error": sol.error,
    }


#: Where each scorer's value lives in an importance report's rows.
_SCORE_KEY = {"ntk": "ntk", "grad": "grad", "bi": "bi", "ablation": "ablation_dppl"}


def _search(teacher: str, tconf, sols: dict, c, data: str, log) -> list[dict]:
    """Each candidate's validation perplexity after a short distillation from the teacher's weights."""
    from clidep.compress.corpus import token_file
    from clidep.compress.distill import validation_ids
    from clidep.compress.shipped import said
    from clidep.data import load_tokenizer
    from clidep.model.convert import load_model

    teacher_model = load_model(teacher).eval()
    tokenizer = load_tokenizer(teacher)
    tokens = token_file(tokenizer, data)
    val_ids = validation_ids(tokenizer, c.val_data)
    trials = []
    for (scorer, gamma), sol in sols.items():
        figures = proxy_ppl(teacher_model, tconf, sol.widths, tokens, val_ids, c)
        trials.append({"scorer": scorer, "gamma": gamma, "layer_widths": sol.widths, "params": sol.params, **figures})
        log(f"auto: {scorer}^{gamma:g} widths {sol.widths}: {said(figures)}")
    return trials


def proxy_ppl(teacher_model, tconf, widths: list[int], tokens: np.ndarray, val_ids: np.ndarray, c) -> dict:
    """Validation perplexities (``shipped.scores``) of the student of WIDTHS after C.search_steps distillation steps.

    It starts as ``compress`` starts (``start_student``) and takes the run's batches, loss, lr and
    seed, but a plain loop: AdamW with C.weight_decay on every parameter (the run's optimiser
    leaves biases and norms undecayed) and the warm-up shortened to a quarter of the steps. The
    loop runs on the main process only, where Accelerate's prepared model would wait for the others.
    """
    from clidep.compress.shipped import scores
    from clidep.compress.widths import schedule_head_dims, student_config

    config = student_config(tconf, widths, schedule_head_dims(tconf, widths))
    return scores(distil_briefly(teacher_model, config, None, tokens, c), val_ids, c.precision)


def distil_briefly(teacher_model, config, init, tokens: np.ndarray, c):
    """The student of CONFIG, started by ``start_student`` (INIT: its initialiser, None for the bottleneck
    students'), after C.search_steps distillation steps (see ``proxy_ppl``), in eval mode."""
    import torch

    from clidep.compress import corpus
    from clidep.compress.distill import distill_loss, lr_lambda
    from clidep.compress.student_init import start_student

    student = start_student(config, teacher_model, tokens, c.seed, init=init)
    steps = c.search_steps
    opt = torch.optim.AdamW(student.parameters(), lr=c.lr, betas=(0.9, 0.95), weight_decay=c.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(min(c.warmup, max(1, steps // 4)), steps))
    student.train()
    for step in range(steps):
        ids = torch.from_numpy(corpus.batch(tokens, c.seed, step, c.batch_size, c.seq_len))
        with torch.no_grad():
            t_logits = teacher_model(ids, use_cache=False).logits
        loss = distill_loss(student(ids, use_cache=False).logits, t_logits, ids, c.alpha, c.temperature)[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), c.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return student.eval()
