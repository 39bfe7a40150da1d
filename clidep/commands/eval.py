"""``clidep eval``: perplexity of a torch model on an evaluation text (the protocol in perplexity.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from clidep.commands.arguments import ModelArg
from clidep.data import load_tokenizer, read_text, tokenize_text
from clidep.errors import ClidepError
from clidep.options import resolve
from clidep.perplexity import PerplexityResult, perplexity, ppl_batch, torch_logits_fn
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
    path = Path(model_path)
    if path.suffix == ".onnx" or (path / "manifest.json").exists() or (path / "model.onnx").is_file():
        return _evaluate_onnx(path / "model.onnx" if path.is_dir() else path, c)
    import torch

    from clidep.model.convert import load_model

    model = load_model(model_path)
    torch.manual_seed(0)
    return _score(
        torch_logits_fn(model), model.config.n_positions, load_tokenizer(model_path, model.config.vocab_size), c
    )


def _evaluate_onnx(graph: Path, c: EvalConfig) -> PerplexityResult:
    """The same protocol through ONNX Runtime on an exported graph, checked against its manifest first
    and held against replacement while it is scored."""
    from clidep.runtime.verify import checked_runner

    if not graph.is_file():
        raise ClidepError(f"no ONNX model at '{graph}'; give a directory made by clidep export")
    with checked_runner(graph, lambda m: print(m, file=sys.stderr)) as (runner, positions):
        if positions is None:
            raise ClidepError(
                f"cannot tell the positions of '{graph}': no clidep metadata and no config.json beside it"
            )
        return _score(runner.logits, positions, load_tokenizer(graph.parent, runner.vocab), c)


def _score(logits_fn, n_positions: int, tokenizer, c: EvalConfig) -> PerplexityResult:
    """The sliding-window perplexity of LOGITS_FN on C's text, with C's context, stride and token limit."""
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
    batch = _batch_within_memory(c.batch_size, context, len(tokenizer))
    with progress_bar("perplexity", total=len(ids) - 1) as advance:
        return perplexity(logits_fn, ids, context, stride, batch, label, advance)


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


def command(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    *,
    options,
) -> None:
    """Perplexity of MODEL (a model directory, or an export scored through ONNX Runtime) on a text with a sliding
    window: exp(mean NLL), every token after the first scored once."""
    result = evaluate(model, options)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        print(
            f"ppl {result.ppl:.2f} over {result.tokens:,} tokens (context {result.context}, stride {result.stride}) on {result.data}"
        )
