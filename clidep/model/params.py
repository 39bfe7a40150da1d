"""Closed-form parameter count of a CLIGPT2 config (no weights needed).

The width solver of ``clidep compress`` searches over this formula, so it must match the real
module count exactly; ``tests/test_model.py`` checks it against ``model.parameters()``.
"""

from __future__ import annotations

from clidep.model.config import CLIGPT2Config


def block_params(width: int, mlp_ratio: int = 4, mlp_kind: str = "standard", inner: int | None = None) -> int:
    """Parameters of one block of width w: attention 4w^2+4w, two LayerNorms 4w, and the MLP of inner size
    i (INNER, else m w): 2 i w + i + w (standard), the same plus alpha (linearizing), or w^2+w (collapsed)."""
    attention = 4 * width * width + 4 * width
    i = mlp_ratio * width if inner is None else inner
    if mlp_kind == "collapsed":
        mlp = width * width + width
    else:
        mlp = 2 * i * width + i + width + (mlp_kind == "linearizing")
    return attention + mlp + 4 * width


def projection_params(n_embd: int, widths: list[int]) -> int:
    """Parameters of the bias-free projections wherever consecutive widths (embedding included) differ."""
    edges = zip([n_embd, *widths], [*widths, n_embd])
    return sum(a * b for a, b in edges if a != b)


def param_count(config: CLIGPT2Config) -> int:
    """Total trainable parameters, the tied LM head counted once (as ``model.parameters()`` does)."""
    d = config.n_embd
    embeddings = (config.vocab_size + config.n_positions) * d
    head = 0 if config.tie_word_embeddings else config.vocab_size * d
    blocks = sum(
        block_params(w, config.mlp_ratio, k, config.inner(i))
        for i, (w, k) in enumerate(zip(config.layer_widths, config.mlp_kinds))
    )
    return embeddings + head + blocks + projection_params(d, config.layer_widths) + 2 * d  # + ln_f
