"""The text an export is checked on: the tokens its perplexity gates score (at least MIN_GATE_TOKENS),
and the windows that calibrate its int8 KV cache."""

from __future__ import annotations

import numpy as np

from clidep.errors import ClidepError
from clidep.export.config import MIN_GATE_TOKENS, PPL_GATES, ExportConfig


def ppl_ids(tokenizer, c: ExportConfig):
    """(token ids, label, the whole text's ids) of the perplexity check: the first PPL_TOKENS + 1 tokens of
    PPL_DATA (0: all)."""
    from clidep.data import read_text, tokenize_text

    text, label = read_text(c.ppl_data)
    every = tokenize_text(tokenizer, text)
    ids = every[: c.ppl_tokens + 1] if c.ppl_tokens else every
    if ids.size < 2:
        raise ClidepError(f"--ppl-data {c.ppl_data} gives {ids.size} token(s): the perplexity check needs at least 2")
    if (c.int8 or c.int4 or c.fp16 or c.gguf) and ids.size - 1 < MIN_GATE_TOKENS:
        given = f"--ppl-tokens {c.ppl_tokens} scores" if c.ppl_tokens and every.size > ids.size else "gives"
        raise ClidepError(
            f"--ppl-data {c.ppl_data} {given} {ids.size - 1} token(s): the quality gates score at least "
            f"{MIN_GATE_TOKENS} (at fewer, int4's +{PPL_GATES['int4']:.0%} gate is inside a few standard errors "
            "of its own noise); give a longer text or more --ppl-tokens"
        )
    return ids, label, every


def calibration_windows(tokenizer, c: ExportConfig, context: int, text_ids, checked: int, label: str):
    """(windows (N, L), label) that calibrate the int8 cache: --data's, else --ppl-data's after the CHECKED
    tokens the perplexity check scores (so the check is not scored on its own calibration), else, where
    the text has nothing past them, the checked tokens themselves, as the label says."""
    from clidep.data import calibration_batch

    n = c.kv_calib_windows
    if c.data:
        calib, data_label = calibration_batch(tokenizer, c.data, n, context, 0)
        return calib.numpy(), data_label
    rest = text_ids[checked:]
    source, where = (
        (rest, "after the checked tokens") if rest.size > context else (text_ids, "overlapping the checked tokens")
    )
    length = min(context, source.size)
    starts = np.random.default_rng(0).integers(0, source.size - length + 1, n)
    return np.stack([source[s : s + length] for s in np.sort(starts)]), f"{label}, {where}"
