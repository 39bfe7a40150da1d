"""A reference's answers kept for a text (runtime/reference_logits.py): rounded to 16 bits without moving a KL
divergence past the fp32 target, read back instead of run again, made again when they do not read back."""

from __future__ import annotations

import pytest

from clidep.data import load_tokenizer, read_text, tokenize_text
from clidep.model.convert import load_model
from clidep.perplexity import agreement, reference_rows, torch_logits_fn
from clidep.runtime.reference_logits import kept_rows


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    model = load_model(teacher_dir)
    ids = tokenize_text(load_tokenizer(teacher_dir), read_text("wikitext-test")[0])[:1201]  # 9 windows, last short
    return torch_logits_fn(model), ids


class Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIDEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "reference-logits"


def test_rounded_rows_keep_the_fp32_target(teacher, teacher_dir, cache):
    """The teacher against its own kept rows: KLD 0 but for the rounding, which must stay far below the 1e-6 an
    fp32 file is held to; top-1 and the reference's perplexity are kept exactly."""
    fn, ids = teacher
    kept = agreement(fn, kept_rows(teacher_dir, fn, ids, 256, 128, 3), ids, 256, 128, 2)
    exact = agreement(fn, reference_rows(fn, ids, 256, 128), ids, 256, 128)
    assert exact.kld_mean < 1e-12 and kept.kld_mean < 1e-7 and kept.kld_p99 < 1e-6
    assert kept.top1 == 1.0 and kept.tokens == ids.size - 1 == 1200
    assert kept.reference_ppl == pytest.approx(exact.reference_ppl, rel=1e-12) == kept.ppl


def test_second_comparison_reads_the_kept_rows(teacher, teacher_dir, cache, capsys):
    fn, ids = teacher
    model = lambda x: fn(x) * 0.9  # noqa: E731 - a model that answers a little otherwise
    first, second = Counting(fn), Counting(fn)
    a = agreement(model, kept_rows(teacher_dir, first, ids, 256, 128), ids, 256, 128)
    b = agreement(model, kept_rows(teacher_dir, second, ids, 256, 128, 1), ids, 256, 128, 1)
    assert first.calls > 0 and second.calls == 0
    assert a == b and a.kld_mean > 1e-3
    assert len(list(cache.iterdir())) == 1
    other = Counting(fn)  # other windows: other rows
    list(kept_rows(teacher_dir, other, ids, 128, 64))
    assert other.calls > 0 and len(list(cache.iterdir())) == 2


def test_rows_that_do_not_read_back_are_made_again(teacher, teacher_dir, cache, capsys):
    fn, ids = teacher
    a = agreement(fn, kept_rows(teacher_dir, fn, ids, 256, 128), ids, 256, 128)
    (folder,) = cache.iterdir()
    (folder / "logp.npy").write_bytes((folder / "logp.npy").read_bytes()[:1000])  # a disk that filled up
    again = Counting(fn)
    b = agreement(fn, kept_rows(teacher_dir, again, ids, 256, 128), ids, 256, 128)
    assert again.calls > 0 and a == b
    assert "do not read back; computing them again" in capsys.readouterr().err
    assert list(kept_rows(teacher_dir, Counting(fn), ids, 256, 128))  # kept whole again


def test_a_comparison_stopped_part_way_keeps_nothing(teacher, teacher_dir, cache):
    fn, ids = teacher
    rows = kept_rows(teacher_dir, fn, ids, 256, 128)
    next(rows)
    rows.close()  # as when the model under test fails on its second chunk
    assert not [p for p in cache.iterdir()]
    counting = Counting(fn)
    list(kept_rows(teacher_dir, counting, ids, 256, 128))
    assert counting.calls > 0


def test_another_reference_is_run(teacher, teacher_dir, cache, tmp_path):
    """Rows are kept for the reference's bytes, not its name: a teacher whose weights changed is run again."""
    import shutil

    fn, ids = teacher
    list(kept_rows(teacher_dir, fn, ids, 256, 128))
    other = shutil.copytree(teacher_dir, tmp_path / "other")
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    counting = Counting(fn)
    list(kept_rows(other, counting, ids, 256, 128))
    assert counting.calls > 0 and len(list(cache.iterdir())) == 2
