"""Knowledge distillation on Hugging Face Accelerate: one loop for CPU, one GPU or many processes.

loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, next token)

The global batch of step s is ``corpus.batch(tokens, seed, s, ...)``; with P processes each
takes rows p, p+P, ... and DDP averages the gradients, so P processes follow the loss curve of
one process with the same global batch. Checkpoints (model, optimizer, scheduler, RNG states
via ``Accelerator.save_state``, plus the step and curve) are written to a temporary directory,
marked complete last, and swapped in by renames; ``resume`` continues the same schedule.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError

from clidep.compress import corpus
from clidep.compress.config import CompressConfig
from clidep.errors import ClidepError
from clidep.perplexity import perplexity, torch_logits_fn
from clidep.progress import progress_bar

COMPLETE = "COMPLETE"
ALPHA_LR_SCALE = 20.0


#: The settings the loop reads, derived from CompressConfig's declarations (their defaults, ranges and help
#: live there once), plus the resolved step count.
TRAIN_FIELDS = (
    "batch_size",
    "seq_len",
    "lr",
    "warmup",
    "weight_decay",
    "grad_clip",
    "alpha",
    "temperature",
    "seed",
    "eval_every",
    "save_every",
)
TrainConfig = make_dataclass(
    "TrainConfig",
    [("steps", int)]
    + [(f.name, f.type, field(default=f.default)) for f in fields(CompressConfig) if f.name in TRAIN_FIELDS],
)


@dataclass
class TrainState:
    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    ppl_curve: list = field(default_factory=list)  # [[tokens, validation ppl], ...]
    loss_curve: list = field(default_factory=list)  # [[step, loss], ...]


def distill_loss(student_logits, teacher_logits, ids, alpha: float, temperature: float):
    """(total, kl, ce) for logits (B, L, V) of a batch ids (B, L)."""
    s = student_logits[:, :-1].float()  # (B, L-1, V): position t predicts token t+1
    t = teacher_logits[:, :-1].float()
    ce = F.cross_entropy(s.reshape(-1, s.size(-1)), ids[:, 1:].reshape(-1))
    log_ps = F.log_softmax(s / temperature, -1)
    log_pt = F.log_softmax(t / temperature, -1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean() * temperature**2
    return alpha * kl + (1 - alpha) * ce, kl, ce


def lr_lambda(warmup: int, steps: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def write_failed(what: str, out: Path, exc: BaseException) -> ClidepError:
    """The one line for a write into OUT that failed (a full disk): WHAT, why, the space left, and
    whether a complete checkpoint survives for --resume."""
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:120]
    kept = latest_checkpoint(out)
    then = (
        f"the checkpoint at step {json.loads((kept / 'trainer_state.json').read_text())['step']} in {kept} is "
        "complete: free space, then run the same command with --resume"
        if kept
        else "no earlier checkpoint exists: free space, then run the command again"
    )
    return ClidepError(
        f"writing {what} failed ({why}; {shutil.disk_usage(out).free / 1e6:,.0f} MB free on that disk); {then}"
    )


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint in OUT (a crash between the two renames leaves it as .old)."""
    for path in (out / "checkpoint", out / "checkpoint.old"):
        if (path / COMPLETE).exists():
            return path
    return None


def train(
    student,
    teacher,
    tokens: np.ndarray,
    val_ids: np.ndarray,
    cfg: TrainConfig,
    out: Path,
    resume: bool = False,
    log=print,
    regulariser=None,
) -> TrainState:
    """Distil TEACHER into STUDENT on TOKENS; checkpoints under OUT/checkpoint; returns the final state.

    ``regulariser(model)``, when given, is added to the loss (LayerCollapse's lc * (1 - alpha)^2).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cuda = torch.cuda.is_available()
    acc = Accelerator(mixed_precision="bf16" if cuda and torch.cuda.is_bf16_supported() else "no", cpu=not cuda)
    if cfg.batch_size % acc.num_processes:
        raise ClidepError(f"--batch-size {cfg.batch_size} must be divisible by the {acc.num_processes} processes")
    set_seed(cfg.seed)
    opt = _optimizer(student, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup, cfg.steps))
    student.train()
    model, opt, sched = acc.prepare(student, opt, sched)
    teacher = teacher.to(acc.device).eval()
    state = _resumed(acc, out, log) if resume else TrainState()
    rows = slice(acc.process_index, None, acc.num_processes)
    t_start = time.perf_counter() - state.seconds
    with progress_bar("distil", cfg.steps, completed=state.step, show=acc.is_main_process) as advance:
        while state.step < cfg.steps:
            ids = torch.from_numpy(corpus.batch(tokens, cfg.seed, state.step, cfg.batch_size, cfg.seq_len)[rows])
            loss, ce, reg = _step(acc, model, teacher, opt, sched, ids.to(acc.device), cfg, regulariser)
            state.step += 1
            state.tokens += cfg.batch_size * cfg.seq_len
            state.seconds = time.perf_counter() - t_start
            state.loss_curve.append([state.step, loss])
            advance(
                1,
                f"loss {loss:.3f}  ppl {math.exp(min(ce, 50)):.1f}  {state.tokens / max(state.seconds, 1e-9):,.0f} tok/s",
            )
            last = state.step == cfg.steps
            if cfg.eval_every and (state.step % cfg.eval_every == 0 or last):
                ppl = _validate(acc, model, val_ids)
                state.ppl_curve.append([state.tokens, ppl])
                log(
                    f"step {state.step}: {state.tokens:,} tokens, validation ppl {ppl:.2f}"
                    + (f", regulariser {reg:.4g}" if reg is not None else "")
                )
            if cfg.save_every and (state.step % cfg.save_every == 0 or last):
                _checkpoint(acc, out, state)
    acc.wait_for_everyone()
    unwrapped = acc.unwrap_model(model)
    if unwrapped is not student:
        student.load_state_dict(unwrapped.state_dict())
    student.eval()
    return state


def _optimizer(student, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over STUDENT: weight decay on the matrices, none on biases and norms, and LayerCollapse's slopes (one
    scalar per MLP that must travel 0 -> 1 within the budget) at a larger step than the weights'."""
    decay = [p for n, p in student.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in student.named_parameters() if p.dim() < 2 and not n.endswith(".alpha")]
    alphas = [p for n, p in student.named_parameters() if n.endswith(".alpha")]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if alphas:
        groups.append({"params": alphas, "weight_decay": 0.0, "lr": cfg.lr * ALPHA_LR_SCALE})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def _resumed(acc, out: Path, log) -> TrainState:
    """The training state of OUT's latest complete checkpoint, loaded into ACC's model, optimiser and schedule."""
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise ClidepError(f"--resume: no complete checkpoint in {out}")
    acc.load_state(str(ckpt))
    state = TrainState(**json.loads((ckpt / "trainer_state.json").read_text()))
    log(f"resumed from {ckpt} at step {state.step}")
    return state


def _step(acc, model, teacher, opt, sched, ids, cfg: TrainConfig, regulariser) -> tuple[float, float, float | None]:
    """One optimiser step on the batch IDS (B, L): (loss averaged over processes, this process's CE, regulariser)."""
    with torch.no_grad(), acc.autocast():
        t_logits = teacher(ids, use_cache=False).logits
    reg = None
    with acc.autocast():
        s_logits = model(ids, use_cache=False).logits
        loss, kl, ce = distill_loss(s_logits, t_logits, ids, cfg.alpha, cfg.temperature)
        if regulariser is not None:
            reg = regulariser(acc.unwrap_model(model))
            loss = loss + reg
    acc.backward(loss)
    if cfg.grad_clip:
        acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    mean_loss = acc.reduce(loss.detach(), reduction="mean").item()
    return mean_loss, ce.item(), None if reg is None else reg.item()


def validation_ids(tokenizer, val_data: str) -> np.ndarray:
    """The first 16,385 tokens of VAL_DATA: the text every validation perplexity of compress is taken on."""
    from clidep.data import read_text, tokenize_text

    return tokenize_text(tokenizer, read_text(val_data)[0])[:16385]


@torch.no_grad()
def validation_ppl(model, val_ids: np.ndarray, logits_fn=None) -> float:
    """The validation perplexity of the loop (and of compress after a collapse): clidep eval's
    protocol with a 256-token window (the model's positions if fewer) every 128 tokens; LOGITS_FN
    (default MODEL's own in PyTorch) scores another form of MODEL the same way, its ONNX file's runner."""
    context = min(256, model.config.n_positions)
    return perplexity(logits_fn or torch_logits_fn(model), val_ids, context, context // 2, 8).ppl


def _validate(acc, model, val_ids: np.ndarray) -> float:
    """Validation perplexity on the main process (the others wait)."""
    ppl = float("nan")
    if acc.is_main_process:
        m = acc.unwrap_model(model)
        m.eval()
        ppl = validation_ppl(m, val_ids)
        m.train()
    acc.wait_for_everyone()
    return ppl


def _checkpoint(acc, out: Path, state: TrainState) -> None:
    """Save to checkpoint.tmp, mark it complete, then swap it in with renames.

    A write that fails (a full disk) removes checkpoint.tmp and leaves the previous checkpoint
    whole: ``ClidepError`` says so, and --resume continues from it once space is freed.
    """
    tmp, final, old = out / "checkpoint.tmp", out / "checkpoint", out / "checkpoint.old"
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    try:
        acc.save_state(str(tmp))
        if acc.is_main_process:
            (tmp / "trainer_state.json").write_text(json.dumps(asdict(state)))
    except (
        OSError,
        RuntimeError,
        SafetensorError,
    ) as exc:  # a full disk, as torch ("unexpected pos ...") or safetensors says it
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_failed(f"the checkpoint at step {state.step}", out, exc) from None
    if acc.is_main_process:
        (tmp / COMPLETE).write_text("")  # written last: a checkpoint without it is never read back
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
