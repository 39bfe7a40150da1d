"""``clidep eval``: perplexity of a torch model on an evaluation text (the protocol in perplexity.py)."""

from __future__ import annotations

from pathlib import Path

from clidep.data import load_tokenizer, read_text, tokenize_text
from clidep.quality.perplexity import PerplexityResult, perplexity, torch_logits_fn
from clidep.options import resolve
from clidep.progress import progress_bar
from clidep.quality.config import EvalConfig


def evaluate(model_path: str | Path, config: EvalConfig | None = None, **options) -> PerplexityResult:
    """Perplexity of MODEL on DATA with a sliding window of CONTEXT tokens every STRIDE tokens.

    CONFIG (an ``EvalConfig``) or its fields as keywords: CONTEXT defaults to the model's position
    count and STRIDE to half of CONTEXT; MAX_TOKENS, when given, scores only the start of the text
    (for quick checks; full-text figures are comparable).
    """
    import torch

    from clidep.model.convert import load_model
    from clidep.errors import ClidepError

    c = resolve(EvalConfig, config, options)
    context, stride, max_tokens = c.context, c.stride, c.max_tokens
    model = load_model(model_path)
    context = model.config.n_positions if context is None else context
    stride = context // 2 if stride is None else stride
    if context > model.config.n_positions:
        raise ClidepError(f"--context {context} exceeds the model's {model.config.n_positions} positions")
    if not 0 < stride < context:
        raise ClidepError(f"--stride must be between 1 and {context - 1} (below the context), got {stride}")
    tokenizer = load_tokenizer(model_path)
    text, label = read_text(c.data)
    ids = tokenize_text(tokenizer, text)
    if max_tokens is not None:
        if max_tokens < context:
            raise ClidepError(f"--max-tokens {max_tokens} is below the context {context}: score at least one window")
        ids = ids[: max_tokens + 1]  # + 1: the first token is context only, never scored
    if ids.size < 2:
        raise ClidepError(f"{label} gives {ids.size} token(s): a perplexity needs at least 2")
    torch.manual_seed(0)
    with progress_bar("perplexity", total=len(ids) - 1) as advance:
        return perplexity(torch_logits_fn(model), ids, context, stride, c.batch_size, label, advance)
