"""compress settings that change what is built: --tokens, --protect auto, --init random, cli+layercollapse."""

from __future__ import annotations

import json

import numpy as np
import torch

from clidep.compress.corpus import token_file
from clidep.data import load_tokenizer
from clidep.model.convert import load_model

from .conftest import tiny_compress


def test_tokens_become_whole_steps(tiny_setup, tmp_path):
    result = tiny_compress(tiny_setup, tmp_path / "t", tokens=1000, save_every=0)  # 8 x 64 = 512 tokens a step
    run = json.loads((tmp_path / "t" / "run.json").read_text())
    assert run["train"]["steps"] == 2 and result["tokens_trained"] == 1024


def test_protect_auto_keeps_the_ntk_critical_blocks_and_the_last(tiny_setup, tmp_path):
    result = tiny_compress(tiny_setup, tmp_path / "a", protect="auto", steps=1, save_every=0)
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["protect_rule"].startswith("auto: NTK critical layers") and 3 in result["protected"]
    widths = result["layer_widths"]
    assert all((w == 64) == (i in result["protected"]) for i, w in enumerate(widths))


def test_random_init_does_not_copy_the_teacher(tiny_setup, tmp_path):
    teacher = load_model(tiny_setup / "teacher")
    for init, same in (("teacher", True), ("random", False)):
        tiny_compress(tiny_setup, tmp_path / init, init=init, steps=1, lr=1e-9, save_every=0)
        block0 = load_model(tmp_path / init).transformer.h[0].attn.c_attn.weight
        # the protected block 0 starts as the teacher's (teacher init) or fresh (random init); lr 1e-9 keeps it there
        assert torch.allclose(block0, teacher.transformer.h[0].attn.c_attn.weight, atol=1e-6) == same, init


def test_cli_with_layercollapse_collapses_inside_the_narrow_blocks(tiny_setup, tmp_path):
    result = tiny_compress(
        tiny_setup,
        tmp_path / "c",
        method="cli+layercollapse",
        layers="1",
        width=None,
        ratio=1.1,
        steps=2,
        save_every=0,
        lc=50.0,
        collapse_tol=1.0,
    )
    assert result["layer_widths"][0] == 64 and result["layer_widths"][1] < 64
    assert [r["layer"] for r in result["layercollapse"]] == [1] and result["mlp_kinds"][1] == "collapsed"
    assert load_model(tmp_path / "c").config.mlp_kinds == result["mlp_kinds"]


def test_the_token_cache_is_keyed_by_content_and_tokenizer(tiny_setup, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIDEP_CACHE", str(tmp_path / "cache"))
    tok = load_tokenizer(tiny_setup / "teacher")
    text = tmp_path / "a.txt"
    text.write_text("The tower is 324 metres tall. " * 50)
    first = token_file(tok, str(text))
    assert token_file(tok, str(text)).filename == first.filename  # same content: the cache is reused
    text.write_text("The tower is 325 metres tall. " * 50)
    changed = token_file(tok, str(text))
    assert changed.filename != first.filename and not np.array_equal(changed, first)
    gpt2 = load_tokenizer("gpt2")  # another vocabulary, same text: another file
    assert token_file(gpt2, str(text)).filename != changed.filename
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 3


def test_match_refuses_a_size_no_width_reaches_within_2_percent(tmp_path, capsys):
    """A uniform bottleneck moves in steps of 4 widths: on a 4 x 64 teacher with a 101-token vocabulary
    those steps are ~6% of the model, and a CLI student of width 16 falls between two of them."""
    from transformers import GPT2Config

    from clidep.app import main
    from clidep.compress.widths import build
    from clidep.model.convert import config_from_gpt2

    teacher = GPT2Config(vocab_size=101, n_positions=64, n_embd=64, n_layer=4, n_head=4)
    teacher.save_pretrained(tmp_path / "teacher")
    build(config_from_gpt2(teacher), "cli", 16, [0, 3]).save_pretrained(tmp_path / "student")
    code = main(
        [
            "compress",
            str(tmp_path / "teacher"),
            "--out",
            str(tmp_path / "o"),
            "--method",
            "uniform",
            "--match",
            str(tmp_path / "student"),
            "--steps",
            "1",
            "--seq-len",
            "32",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no uniform width matches" in err and "within 2% (-6.48%)" in err, err
    assert not (tmp_path / "o").exists()
    build(config_from_gpt2(teacher), "cli", 24, [0, 3]).save_pretrained(tmp_path / "near")  # +1.36%: within 2%
    code = main(
        [
            "compress",
            str(tmp_path / "teacher"),
            "--out",
            str(tmp_path / "o"),
            "--method",
            "uniform",
            "--match",
            str(tmp_path / "near"),
            "--steps",
            "1",
            "--seq-len",
            "32",
            "--val-data",
            str(tmp_path / "none"),
        ]
    )
    assert code == 2 and "no text" in capsys.readouterr().err  # past the size check: it fails on the validation text
