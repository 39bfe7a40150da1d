"""The offline data helper: resolution, override, clear errors, the real GPT-2 tokenizer."""

from __future__ import annotations

import pytest

from clidep import data
from clidep.errors import ClidepError


def test_env_var_overrides_location(tmp_path, monkeypatch):
    (tmp_path / "wikitext-2-raw").mkdir()
    (tmp_path / "wikitext-2-raw" / "wiki.test.detok.txt").write_text("hello there\n")
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.shared_data_dir() == tmp_path
    text, label = data.read_text("wikitext-test")
    assert text == "hello there\n" and label.startswith("wikitext-test")


def test_missing_file_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    with pytest.raises(ClidepError, match="wiki.test.detok.txt"):
        data.read_text("wikitext-test")


def test_env_var_pointing_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(ClidepError, match="CLIDEP_SHARED_DATA"):
        data.shared_data_dir()


def test_unknown_text_lists_known_names():
    with pytest.raises(ClidepError, match="wikitext-test"):
        data.read_text("no-such-text")


def test_gpt2_tokenizer_is_the_real_one():
    tok = data.load_tokenizer("gpt2")
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.eos_token_id == 50256 and len(tok) == 50257


def test_corpus_splits_articles(tmp_path):
    (tmp_path / "a.txt").write_text(" = One = \n\nfirst body\n\n = Two = \n\nsecond body\n")
    (tmp_path / "valid.txt").write_text("held out\n")
    docs = data.read_corpus(str(tmp_path))
    assert len(docs) == 2 and "first body" in docs[0] and "second body" in docs[1]
    with pytest.raises(ClidepError, match="no training data"):
        data.read_corpus(str(tmp_path / "missing"))
