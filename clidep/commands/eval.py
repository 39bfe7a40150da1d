"""``clidep eval``: perplexity of a model on an evaluation text (the protocol in perplexity.py), and with
--reference how far its next-token distributions are from another model's on the same tokens."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from clidep.commands.arguments import ModelArg
from clidep.data import load_tokenizer, read_text, tokenize_text, tokenizer_folder
from clidep.errors import ClidepError
from clidep.options import resolve
from clidep.perplexity import PerplexityResult, agreement, perplexity, ppl_batch, torch_logits_fn
from clidep.progress import progress_bar
from clidep.quality.config import EvalConfig


def evaluate(model_path: str | Path, config: EvalConfig | None = None, **options) -> PerplexityResult:
    """Perplexity of MODEL (a torch model, or an exported ONNX graph: an export directory or an .onnx
    file in one, run through ONNX Runtime) on DATA with a sliding window of CONTEXT tokens every STRIDE tokens.

    CONFIG (an ``EvalConfig``) or its fields as keywords: CONTEXT defaults to the model's position
    count and STRIDE to half of CONTEXT; MAX_TOKENS, when given, scores only the start of the text
    (for quick checks; full-text figures are comparable).
    """
    c = resolve(EvalConfig, config, options)
    with _opened(model_path) as (logits_fn, positions, tokenizer):
        ids, label, context, stride = _tokens(tokenizer, positions, c)
        batch = _batch_within_memory(c.batch_size, context, len(tokenizer))
        with progress_bar("perplexity", total=len(ids) - 1) as advance:
            return perplexity(logits_fn, ids, context, stride, batch, label, advance)


def compare(model_path: str | Path, reference: str | Path, config: EvalConfig | None = None, **options) -> dict:
    """MODEL against REFERENCE (the teacher, or the same model's fp32 file) on the same tokens of C's text:
    KL divergence of MODEL's next-token distribution from REFERENCE's (mean, 99th percentile, max), top-1
    agreement, and both perplexities. Each is a torch folder or an export, as for ``evaluate``; both must
    tokenise the text alike. REFERENCE's answers on the text are kept (runtime/reference_logits.py): the next
    model compared with it on the same text and windows is the only one run."""
    from clidep.runtime.reference_logits import kept_rows

    c = resolve(EvalConfig, config, options)
    with _opened(model_path) as (logits_fn, positions, tokenizer), _opened(reference) as (ref_fn, ref_pos, ref_tok):
        ids, label, context, stride = _tokens(tokenizer, min(positions, ref_pos), c)
        if len(ref_tok) != len(tokenizer) or not np.array_equal(_tokens(ref_tok, min(positions, ref_pos), c)[0], ids):
            raise ClidepError(
                f"--reference {reference} tokenises {label} differently from {model_path}: no token pairs"
            )
        batch = _batch_within_memory(max(1, c.batch_size // 2), context, len(tokenizer))  # two models' logits
        with progress_bar("agreement", total=len(ids) - 1) as advance:
            rows = kept_rows(_file(reference), ref_fn, ids, context, stride, batch)
            found = agreement(logits_fn, rows, ids, context, stride, batch, advance)
    return {**found.to_dict(), "reference": str(reference), "data": label, "context": context, "stride": stride}


@contextlib.contextmanager
def _opened(model_path: str | Path) -> Iterator[tuple]:
    """(logits function, positions, tokenizer) of a torch model folder, or of an export's file in its own runtime
    (runtime/opened.py: an ONNX graph checked against its manifest and held against replacement while it is
    scored, a GGUF file in llama.cpp, an ExecuTorch program); an export folder means its fp32 graph."""
    from clidep.runtime.opened import RUNTIME_OF, opened

    path = _file(model_path)
    if path.suffix in RUNTIME_OF:
        with opened(path, lambda m: print(m, file=sys.stderr)) as model:
            yield model.logits, model.positions, load_tokenizer(tokenizer_folder(path), model.vocab)
        return
    import torch

    from clidep.model.convert import load_model

    model = load_model(model_path)
    torch.manual_seed(0)
    yield torch_logits_fn(model), model.config.n_positions, load_tokenizer(model_path, model.config.vocab_size)


def _file(model_path: str | Path) -> Path:
    """The file an export folder is read from (its fp32 graph), else MODEL_PATH itself (a file or torch folder)."""
    path = Path(model_path)
    if path.is_dir() and ((path / "manifest.json").exists() or (path / "model.onnx").is_file()):
        path = path / "model.onnx"
        if not path.is_file():
            raise ClidepError(f"no ONNX model at '{path}'; give a directory made by clidep export")
    return path


def _tokens(tokenizer, n_positions: int, c: EvalConfig) -> tuple[np.ndarray, str, int, int]:
    """(ids, label, context, stride) of C's text under the sliding-window protocol, checked."""
    context = n_positions if c.context is None else c.context
    stride = context // 2 if c.stride is None else c.stride
    if context > n_positions:
        raise ClidepError(f"--context {context} exceeds the model's {n_positions} positions")
    if not 0 < stride < context:
        raise ClidepError(f"--stride must be between 1 and {context - 1} (below the context), got {stride}")
    text, label = read_text(c.data)
    ids = tokenize_text(tokenizer, text)
    if c.max_tokens is not None:
        if c.max_tokens < context:
            raise ClidepError(f"--max-tokens {c.max_tokens} is below the context {context}: score at least one window")
        ids = ids[: c.max_tokens + 1]  # + 1: the first token is context only, never scored
    if ids.size < 2:
        raise ClidepError(f"{label} gives {ids.size} token(s): a perplexity needs at least 2")
    return ids, label, context, stride


def _batch_within_memory(asked: int, context: int, vocab: int) -> int:
    """--batch-size, or fewer windows where their fp32 logits would pass a quarter of the memory available
    now (--batch-size 100000 asked for 4 GB at once and crashed); the figure does not depend on it, and
    a smaller batch is said on stderr."""
    import psutil

    most = ppl_batch(context, vocab, most=asked, budget=psutil.virtual_memory().available // 4)
    if most == asked:
        return asked
    print(
        f"note: --batch-size {asked} would hold {asked * 4 * context * vocab / 1e9:,.1f} GB of logits; scoring {most} windows "
        "at a time (the perplexity does not depend on it)",
        file=sys.stderr,
    )
    return most


def _tasks(model: str, c: EvalConfig, reference: str | None, as_json: bool) -> None:
    """--tasks: the harness's metrics for MODEL through clidep's backend, one line per task (or JSON)."""
    from clidep.quality.harness import run_tasks

    if reference is not None:
        raise ClidepError("--tasks and --reference are two questions: ask one per run")
    found = run_tasks(model, list(c.tasks), limit=c.limit, batch_size=c.batch_size)
    if as_json:
        print(json.dumps(found))
        return
    for task, metrics in found.items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float) and "stderr" not in k)
        print(f"{task}: {shown} ({metrics.get('sample_len', '?')} documents)")


def command(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    reference: Annotated[
        str | None,
        typer.Option(
            help="A model to compare with on the same tokens (the teacher, or the same model's fp32 export): "
            "KL divergence of MODEL's next-token distribution from its (mean, p99, max), top-1 agreement, Δppl."
        ),
    ] = None,
    *,
    options,
) -> None:
    """Perplexity of MODEL (a model directory, or an export scored through ONNX Runtime) on a text with a sliding
    window: exp(mean NLL), every token after the first scored once; with --reference, how far its answers are
    from the reference's on the same tokens."""
    c = resolve(EvalConfig, options, {})
    if c.tasks:
        _tasks(model, c, reference, as_json)
        return
    if reference is not None:
        found = compare(model, reference, options)
        if as_json:
            print(json.dumps(found))
            return
        print(
            f"against {reference} on {found['tokens']:,} tokens of {found['data']} (context {found['context']}): "
            f"KLD mean {found['kld_mean']:.3g}, p99 {found['kld_p99']:.3g}, max {found['kld_max']:.3g} nats; "
            f"top-1 agreement {found['top1']:.2%}; ppl {found['ppl']:.2f} against {found['reference_ppl']:.2f} "
            f"({found['ppl'] / found['reference_ppl'] - 1:+.2%})"
        )
        return
    result = evaluate(model, options)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        print(
            f"ppl {result.ppl:.2f} over {result.tokens:,} tokens (context {result.context}, stride {result.stride}) on {result.data}"
        )
