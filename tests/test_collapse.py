"""LayerCollapse: exact collapse at alpha = 1, the regulariser's pull, the family round trip, the method."""

from __future__ import annotations

import json

import pytest
import torch

from clidep import CLIGPT2Config, CLIGPT2LMHeadModel, param_count
from clidep.compress.collapse import collapse, regulariser
from clidep.export.traced_graph import export_onnx
from clidep.export.validate import validate_export
from clidep.model.convert import load_model

from .conftest import tiny_compress


def linearizing_model(alpha: float, kinds=("standard", "linearizing", "linearizing", "standard")) -> CLIGPT2LMHeadModel:
    torch.manual_seed(0)
    config = CLIGPT2Config(
        vocab_size=101,
        n_positions=64,
        n_embd=32,
        n_layer=4,
        n_head=2,
        mlp_kinds=list(kinds),
        bos_token_id=0,
        eos_token_id=0,
    )
    model = CLIGPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for b in model.transformer.h:
            if hasattr(b.mlp, "act") and hasattr(b.mlp.act, "alpha"):
                b.mlp.act.alpha.fill_(alpha)
    return model


def test_collapse_at_alpha_one_is_exact():
    model = linearizing_model(1.0)
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(1))
    collapsed, records = collapse(model, ids)
    assert [r["layer"] for r in records] == [1, 2] and all(r["collapsed"] for r in records)
    assert collapsed.config.mlp_kinds == ["standard", "collapsed", "collapsed", "standard"]
    with torch.no_grad():
        assert torch.allclose(collapsed(ids).logits, model(ids).logits, atol=1e-5)
    w = 32
    assert param_count(model.config) - param_count(collapsed.config) == 2 * (8 * w * w + 5 * w + 1 - (w * w + w))
    assert sum(p.numel() for p in collapsed.parameters()) == param_count(collapsed.config)
    assert all(r["max_logit_diff"] <= 1e-4 and r["error_bound"] <= 1e-6 for r in records)


def test_alpha_short_of_one_is_left_alone_and_the_bound_holds():
    model = linearizing_model(0.7)
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(1))
    collapsed, records = collapse(model, ids, tol=0.05)
    assert not any(r["collapsed"] for r in records) and "0.300 > 0.05" in records[0]["reason"]
    assert collapsed.config.mlp_kinds == model.config.mlp_kinds
    loose, loose_records = collapse(model, ids, tol=0.5)
    assert all(r["collapsed"] for r in loose_records) and all(r["max_logit_diff"] > 0 for r in loose_records)


def test_regulariser_pulls_alpha_towards_one():
    model = linearizing_model(0.0)
    model.train()
    alphas = [model.transformer.h[i].mlp.act.alpha for i in (1, 2)]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    ids = torch.randint(0, 101, (4, 16), generator=torch.Generator().manual_seed(2))
    for _ in range(40):
        loss = model(ids, labels=ids).loss + regulariser(model, lc=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(a.item() > 0.8 for a in alphas), [a.item() for a in alphas]


def test_collapsed_model_saves_loads_and_exports(tmp_path):
    model = linearizing_model(1.0)
    collapsed, _ = collapse(model, torch.randint(0, 101, (1, 8)))
    collapsed.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.mlp_kinds[1] == "collapsed"
    path = export_onnx(loaded, tmp_path / "m.onnx")
    assert validate_export(loaded, path)["max_abs_logit_diff"] <= 1e-4


def test_layercollapse_method_end_to_end(tiny_setup):  # noqa: F811
    result = tiny_compress(
        tiny_setup,
        tiny_setup / "lc",
        method="layercollapse",
        width=None,
        layers="1,2",
        lc=5.0,
        collapse_tol=0.5,
        steps=30,
        lr=3e-3,
        save_every=0,
        eval_every=30,
    )
    alphas = {r["layer"]: r["alpha"] for r in result["layercollapse"]}
    assert set(alphas) == {1, 2} and all(a > 0.5 for a in alphas.values()), alphas
    assert result["mlp_kinds"] == ["standard", "collapsed", "collapsed", "standard"]
    assert result["student_params"] < result["teacher_params"]
    # alpha short of 1: the collapse changes the model, and compress.json says by how much
    assert result["val_ppl"] != result["val_ppl_before_collapse"] == result["ppl_curve"][-1][1]
    saved = json.loads((tiny_setup / "lc" / "compress.json").read_text())
    assert saved["layercollapse"][0]["collapsed"] and load_model(tiny_setup / "lc").config.mlp_kinds[1] == "collapsed"


def test_layercollapse_by_size_collapses_the_least_important_mlps_first():
    from clidep.compress.blocks import resolve_collapse
    from clidep.errors import ClidepError

    teacher = CLIGPT2Config(vocab_size=101, n_positions=64, n_embd=32, n_layer=6, n_head=2)
    report = {"scores": [{"layer": i, "ntk": s} for i, s in enumerate([9.0, 1.0, 5.0, 0.5, 3.0, 8.0])]}
    full = param_count(teacher)
    # what one collapse saves, counted on the modules themselves (not by params.py's formula)
    one_collapsed = CLIGPT2Config(**{**teacher.to_dict(), "mlp_kinds": ["standard", "collapsed", *["standard"] * 4]})
    per_mlp = sum(p.numel() for p in CLIGPT2LMHeadModel(teacher).parameters()) - sum(
        p.numel() for p in CLIGPT2LMHeadModel(one_collapsed).parameters()
    )
    assert per_mlp == 2 * 4 * 32 * 32 + 5 * 32 - (32 * 32 + 32), "4x MLP (two matrices, two biases) against one linear"
    chosen, rule = resolve_collapse("auto", "unused", [1, 2, 3, 4], 6, report, (teacher, full - 2 * per_mlp))
    assert chosen == [1, 3] and "2 least important" in rule  # NTK 0.5 and 1.0, the two that reach the size
    chosen, _ = resolve_collapse("auto", "unused", [1, 2, 3, 4], 6, report, (teacher, full - 3 * per_mlp - 10))
    assert chosen == [1, 3, 4]
    with pytest.raises(ClidepError, match=r"largest reachable ratio .* cli\+layercollapse"):
        resolve_collapse("auto", "unused", [1, 2, 3, 4], 6, report, (teacher, full // 3))
