"""The torch-free runtime: the graph's I/O helpers and the runner's sampling, EOS and decode step."""

from __future__ import annotations

import numpy as np
import pytest

from clidep.runtime import onnx_io
from clidep.runtime.runner import OnnxCausalLM


def test_feeds_name_every_past_and_keep_dtypes():
    past = onnx_io.empty_past([(2, 8), (3, 4)], batch=2)
    assert [p.shape for p in past] == [(2, 2, 0, 8), (2, 2, 0, 8), (2, 3, 0, 4), (2, 3, 0, 4)]
    feeds = onnx_io.feeds(np.ones((2, 5)), np.ones((2, 5)), np.zeros((2, 5)), past)
    assert set(feeds) == set(onnx_io.input_names(2))
    assert feeds["input_ids"].dtype == np.int64 and feeds["past_key_values.1.value"] is past[3]


def test_left_pad_positions_count_real_tokens_only():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert onnx_io.left_pad_positions(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


@pytest.fixture(scope="module")
def runner(teacher_artifact):
    out, _ = teacher_artifact
    return OnnxCausalLM(out / "model.onnx")


PROMPT = np.array([[45, 1200, 9, 377, 81]])


def test_top_1_sampling_is_greedy_and_a_seed_repeats_a_sample(runner):
    greedy = runner.generate(PROMPT, max_new_tokens=12)
    assert np.array_equal(runner.generate(PROMPT, max_new_tokens=12, temperature=1.0, top_k=1, seed=5), greedy)
    a = runner.generate(PROMPT, max_new_tokens=12, temperature=1.5, seed=5)
    assert np.array_equal(a, runner.generate(PROMPT, max_new_tokens=12, temperature=1.5, seed=5))
    assert not np.array_equal(a, greedy)  # sampling at temperature 1.5 over 8,192 tokens leaves the greedy path
    assert not np.array_equal(a, runner.generate(PROMPT, max_new_tokens=12, temperature=1.5, seed=6))


def test_generation_stops_at_eos_and_pads_finished_rows(runner):
    greedy = runner.generate(PROMPT, max_new_tokens=6)
    eos = int(greedy[0, PROMPT.shape[1] + 2])  # the third new token
    stopped = runner.generate(PROMPT, max_new_tokens=6, eos_token_id=eos)
    first = int(np.argmax(greedy[0, PROMPT.shape[1] :] == eos))  # it may come earlier than the third
    assert stopped.shape[1] == PROMPT.shape[1] + first + 1 and stopped[0, -1] == eos
    assert np.array_equal(stopped[0], greedy[0, : stopped.shape[1]])


def test_the_decode_step_continues_the_full_pass(runner):
    ids = np.array([[45, 1200, 9, 377, 81, 12, 600]])
    mask, pos = np.ones_like(ids), onnx_io.left_pad_positions(np.ones_like(ids))
    full, _ = runner.forward(ids, mask, pos, runner.empty_past(1))
    logits, past = runner.forward(ids[:, :-1], mask[:, :-1], pos[:, :-1], runner.empty_past(1))
    step, mask2, pos2, _ = runner.decode_step(ids[:, -1:], mask[:, :-1], pos[:, :-1], past)
    assert mask2.shape == (1, 7) and pos2.tolist() == [[6]]
    assert np.allclose(step[:, -1], full[:, -1], atol=1e-4)
