"""The perplexity protocol: exact tiling of scored tokens, known values, and agreement with the model's loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clidep.data import load_tokenizer, read_text, tokenize_text
from clidep.model.convert import load_model
from clidep.perplexity import perplexity, torch_logits_fn, windows


@pytest.mark.parametrize("n, context, stride", [(2, 4, 2), (10, 4, 2), (11, 4, 3), (100, 16, 15), (5, 8, 4), (7, 2, 1)])
def test_windows_score_every_token_after_the_first_once(n, context, stride):
    scored = []
    for begin, end, first in windows(n, context, stride):
        assert end - begin <= context and begin < first <= end
        scored += list(range(first, end))
    assert scored == list(range(1, n))


def test_uniform_model_has_vocabulary_perplexity():
    V = 37
    res = perplexity(lambda x: np.zeros((*x.shape, V)), np.arange(50) % V, context=8, stride=4)
    assert res.tokens == 49 and math.isclose(res.ppl, V, rel_tol=1e-9)


def test_stride_out_of_range_is_refused():
    for stride in (0, 4, 5):  # stride == context would leave a window's first token without history
        with pytest.raises(ValueError, match="stride"):
            list(windows(10, 4, stride))


def test_single_window_equals_model_loss(teacher_dir):
    """With one window the protocol reduces to exp(loss) of a plain forward pass."""
    model = load_model(teacher_dir)
    tok = load_tokenizer(teacher_dir)
    text, _ = read_text("wikitext-test")
    ids = tokenize_text(tok, text[:4000])[:200]
    res = perplexity(torch_logits_fn(model), ids, context=256, stride=128)
    with torch.no_grad():
        loss = model(torch.from_numpy(ids)[None], labels=torch.from_numpy(ids)[None]).loss.item()
    assert res.tokens == 199
    assert math.isclose(res.ppl, math.exp(loss), rel_tol=1e-5)


def test_teacher_on_wikitext_slice_is_in_its_range(teacher_dir):
    """Sliding windows over the first 6k tokens: context helps, and the teacher is far better than chance."""
    model = load_model(teacher_dir)
    ids = tokenize_text(load_tokenizer(teacher_dir), read_text("wikitext-test")[0])[:6000]
    fn = torch_logits_fn(model)
    short = perplexity(fn, ids, context=32, stride=16, batch_size=16)
    long = perplexity(fn, ids, context=256, stride=128, batch_size=8)
    assert short.tokens == long.tokens == 5999
    assert long.ppl < short.ppl < model.config.vocab_size / 10


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_scored_tokens_come_in_text_order_whatever_the_batch(batch_size):
    """Kept reference rows are read back in text order, so a model scored in batches of any size must come in
    that order (a short last window used to go first in its batch): the targets are the text after its first
    token, in the chunks chunk_sizes names."""
    from clidep.perplexity import chunk_sizes, scored_logits

    ids = np.arange(1000) % 97  # 7 windows of 256 every 128: the last one short
    chunks = list(scored_logits(lambda x: np.zeros((*x.shape, 97)), ids, 256, 128, batch_size))
    assert np.array_equal(np.concatenate([t for _, t in chunks]), ids[1:])
    assert [t.size for _, t in chunks] == list(chunk_sizes(ids.size, 256, 128))
