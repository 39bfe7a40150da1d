"""Importance scorers: a planted dominant block, Hutchinson against the exact NTK trace, the rule, the command."""

from __future__ import annotations

import json

import torch

from clidep import from_gpt2
from clidep.compress import importance as I
from clidep.compress.analyze import analyze, write_report

from .conftest import tiny_gpt2


def planted_model():
    """Block 0 carries the model by construction: the other blocks are scaled to near-silence.

    The planted block is block 0 because the NTK of a block also counts how much later blocks
    amplify its effect; a block dominant by construction further up would share its score with
    every block before it (what block 0 is in the paper's finding, too).
    """
    model = from_gpt2(tiny_gpt2(n_layer=4))
    with torch.no_grad():
        for i, block in enumerate(model.transformer.h):
            for p in block.parameters():
                p.mul_(3.0 if i == 0 and p.dim() == 2 else 0.1 if i else 1.0)
        model.transformer.wte.weight.mul_(4.0)  # sharper next-token distributions, so that a change is visible
    return model


def own_samples(model, n=8, length=32, seed=0):
    """Sequences sampled from the model itself: skipping a block can then only raise the expected NLL
    (cross-entropy = entropy + KL), so ablation measures how much each block shapes the output."""
    torch.manual_seed(seed)
    start = torch.randint(1, model.config.vocab_size, (n, 1), generator=torch.Generator().manual_seed(seed))
    out = model.generate(
        start,
        attention_mask=torch.ones_like(start),
        max_new_tokens=length - 1,
        min_new_tokens=length - 1,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        pad_token_id=0,
    )
    assert out.shape == (n, length)
    return out


def test_every_scorer_ranks_the_planted_block_first():
    model = planted_model()
    ids = own_samples(model)
    ntk = I.ntk_traces(model, ids, probes=8, seed=0)
    scores = {
        "ntk": [ntk[str(i)].trace for i in range(4)],
        "grad": I.grad_norms(model, ids),
        "bi": I.block_influence(model, ids),
        "ablation": I.ablation_dppl(model, ids)[1],
    }
    for name, values in scores.items():
        assert max(range(4), key=values.__getitem__) == 0, f"{name} ranks {values}"
        assert values[0] > 2 * max(values[1:]), f"{name}: planted block not clearly first: {values}"
    assert I.select_critical(scores["ntk"]).critical == [0]


def test_hutchinson_agrees_with_exact_trace():
    model = from_gpt2(tiny_gpt2(n_layer=2, n_embd=16, n_head=2, vocab=7))
    ids = torch.tensor([[1, 4, 2, 6, 3]])
    exact = I.exact_ntk_traces(model, ids)
    est = I.ntk_traces(model, ids, probes=200, seed=0)
    for name, value in exact.items():
        e = est[name]
        # within 4 standard errors of the estimator, and the stated error itself is informative (< 20%)
        assert abs(e.trace - value) <= 4 * e.rse * e.trace, f"{name}: exact {value}, estimate {e.trace} ± {e.rse:.1%}"
        assert e.rse < 0.2


def test_largest_gap_rule():
    sel = I.select_critical([5.0, 0.1, 0.12, 4.0, 0.09, 0.11])
    assert sel.critical == [0, 3] and "33.3x" in sel.rule
    flat = I.select_critical([1.0, 1.1, 0.9, 1.05])
    assert flat.critical == [1] and "only the top block" in flat.rule


def test_skipped_block_is_restored():
    model = planted_model()
    original = model.transformer.h[2]
    with I.skipped(model, 2):
        assert model.transformer.h[2] is not original
    assert model.transformer.h[2] is original


def test_report_on_teacher_is_deterministic_and_complete(teacher_dir, tmp_path):
    kw = dict(samples=2, seq_len=32, probes=4, seed=3)
    a = analyze(teacher_dir, **kw)
    b = analyze(teacher_dir, **kw)
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert strip(a) == strip(b)
    assert len(a["scores"]) == 12 and a["critical_layers"] and a["rule"]
    for s in a["scores"]:
        assert {"layer", "ntk", "ntk_per_param", "ntk_rse", "grad", "bi", "ablation_dppl"} <= s.keys()
        assert s["ntk"] > 0 and s["ntk_per_param"] > 0
    assert a["embedding"]["ntk"] > 0
    # The reference teacher's block 0 leads every scorer by far (docs/commands/analyze.md): a wrong trace or
    # a mislabelled block would not.
    ntk = [s["ntk"] for s in a["scores"]]
    assert ntk.index(max(ntk)) == 0 and a["layer0_ratio"] > 2 and 0 in a["critical_layers"]
    json_path, png_path = write_report(a, tmp_path)
    assert json.loads(json_path.read_text())["critical_layers"] == a["critical_layers"]
    assert png_path.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*tmp*")), "temporary files must not be left behind"


def test_analyze_refuses_model_without_blocks(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from clidep.app import main

    GPT2LMHeadModel(GPT2Config(n_layer=0, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "m")
    assert main(["analyze", str(tmp_path / "m"), "--out", str(tmp_path / "o")]) == 2
    assert "n_layer must be >= 1" in capsys.readouterr().err
