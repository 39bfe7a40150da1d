"""The CLIGPT2 family: GPT-2 equivalence, KV cache, parameter formula, Auto round trip, config checks."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from clidep import CLIGPT2Config, CLIGPT2LMHeadModel, from_gpt2, param_count
from clidep.model.convert import to_gpt2

from .conftest import SCHEDULES, python_without_clidep, tiny_config, tiny_gpt2


def left_padded_batch(vocab: int, T: int = 12, pad: int = 4):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (2, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0  # row 1 is left-padded
    return ids, mask


@pytest.mark.parametrize("explicit_positions", [False, True])
def test_from_gpt2_matches_gpt2_logits(explicit_positions):
    gpt2 = tiny_gpt2(n_layer=3)
    model = from_gpt2(gpt2)
    ids, mask = left_padded_batch(gpt2.config.vocab_size)
    kwargs = {"attention_mask": mask}
    if explicit_positions:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate() passes for left padding
    with torch.no_grad():
        ref = gpt2(ids, **kwargs).logits
        out = model(ids, **kwargs).logits
    valid = mask.bool()
    assert out.shape == ref.shape
    assert (out - ref)[valid].abs().max().item() <= 1e-5
    assert model.config.layer_widths == [64] * 3
    assert all(isinstance(p, torch.nn.Identity) for p in model.transformer.proj), "identity schedule has no projections"


def test_from_gpt2_transposes_conv1d_weights():
    gpt2 = tiny_gpt2()
    model = from_gpt2(gpt2)
    fc = gpt2.transformer.h[1].mlp.c_fc.weight  # Conv1D: (in, out)
    assert torch.equal(model.transformer.h[1].mlp.c_fc.weight, fc.t())
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_from_gpt2_refuses_unsupported_options():
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        from_gpt2(GPT2LMHeadModel(config))


def test_a_gpt2_of_any_n_inner_keeps_its_logits_and_its_mlp_width_both_ways():
    """The MLP axis: a GPT-2 whose n_inner is no multiple of n_embd (72 x 4.4 = 317) converts with the same
    logits, counts its parameters exactly, and converts back to the same n_inner."""
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=72, n_layer=2, n_head=2, n_inner=317, vocab_size=101)).eval()
    model = from_gpt2(gpt2).eval()
    assert model.config.mlp_inner == 317 and model.transformer.h[0].mlp.c_fc.out_features == 317
    assert param_count(model.config) == sum(p.numel() for p in model.parameters())
    ids = torch.arange(1, 30)[None]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gpt2(ids).logits)
        back = to_gpt2(model)
        assert back.config.n_inner == 317 and torch.equal(back(ids).logits, gpt2(ids).logits)


@pytest.mark.parametrize("name", SCHEDULES)
def test_param_count_formula_matches_modules(name):
    config = tiny_config(SCHEDULES[name])
    model = CLIGPT2LMHeadModel(config)
    assert param_count(config) == sum(p.numel() for p in model.parameters())


def test_param_count_gpt2_medium_shapes():
    # GPT-2 medium as the paper counts it: 354.8 M parameters.
    medium = CLIGPT2Config(vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16)
    assert round(param_count(medium) / 1e6, 1) == 354.8
    untied = CLIGPT2Config(
        vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16, tie_word_embeddings=False
    )
    assert param_count(untied) - param_count(medium) == 50257 * 1024


@pytest.mark.parametrize("name", ["cli", "uniform", "ragged"])
def test_projections_sit_where_widths_change(name):
    widths = SCHEDULES[name]
    model = CLIGPT2LMHeadModel(tiny_config(widths))
    edges = list(zip([64, *widths], [*widths, 64]))
    for proj, (a, b) in zip(model.transformer.proj, edges):
        if a == b:
            assert isinstance(proj, torch.nn.Identity)
        else:
            assert (proj.in_features, proj.out_features, proj.bias) == (a, b, None)
    heads = [blk.attn.n_head for blk in model.transformer.h]
    assert heads == [w // 16 for w in widths]


DECODING = {
    "greedy": dict(do_sample=False),
    "beam": dict(do_sample=False, num_beams=3),
    "sample": dict(do_sample=True, top_k=20, temperature=1.5),
}


@pytest.mark.parametrize("decoding", DECODING)
@pytest.mark.parametrize("name", ["cli", "ragged"])
def test_generate_with_cache_equals_without(name, decoding):
    """generate() hands the cache over under its own name (``cache`` from transformers 5.24,
    ``past_key_values`` before); a model that drops it sees one token without history per step."""
    torch.manual_seed(0)
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES[name])).eval()
    ids, mask = left_padded_batch(101, T=8, pad=3)
    args = dict(attention_mask=mask, max_new_tokens=12, pad_token_id=0, **DECODING[decoding])

    def run(use_cache: bool) -> torch.Tensor:
        torch.manual_seed(7)  # the same draws for sampling
        return model.generate(ids, use_cache=use_cache, **args)

    with_cache, without = run(True), run(False)
    assert with_cache.shape == (2, 20)
    assert torch.equal(with_cache, without)


def _cache_of(out):
    return out.cache if "cache" in type(out).__dataclass_fields__ else out.past_key_values


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_cache_logits_equal_full_pass(name):
    torch.manual_seed(0)
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["ragged"])).eval()
    ids = torch.randint(0, 101, (1, 10))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        first = model(ids[:, :6], use_cache=True)
        rest = model(ids[:, 6:], use_cache=True, **{name: _cache_of(first)})
    assert [_cache_of(first).layers[i].keys.shape[1] for i in range(4)] == [1, 4, 2, 3]  # heads per block
    assert _cache_of(rest).get_seq_length() == 10
    assert torch.allclose(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(cache_params=None), "cache_params"),  # a renamed or misspelt argument is not swallowed
        (dict(past_key_value=None), "past_key_value"),
        (dict(output_attentions=True), "output_attentions"),
        (dict(output_hidden_states=True), "output_hidden_states"),
        (dict(return_dict=False), "return_dict"),
    ],
)
def test_forward_refuses_what_it_would_ignore(kwargs, named):
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["cli"])).eval()
    with pytest.raises(TypeError, match=named):
        model(torch.zeros(1, 3, dtype=torch.long), **kwargs)


def test_forward_refuses_two_caches():
    from transformers import DynamicCache

    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["cli"])).eval()
    with pytest.raises(TypeError, match="both 'cache' and 'past_key_values'"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=DynamicCache(), past_key_values=DynamicCache())


def test_auto_classes_round_trip(tmp_path):
    torch.manual_seed(0)
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["cli"])).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "pytorch_model.bin").exists()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "cli_gpt2" and saved["layer_widths"] == SCHEDULES["cli"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, CLIGPT2LMHeadModel) and isinstance(AutoConfig.from_pretrained(tmp_path), CLIGPT2Config)
    ids = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()


def test_public_api_registers_the_family_on_first_use():
    """``import clidep`` stays light; the first use of the API makes the Auto classes know cli_gpt2."""
    import subprocess
    import sys

    probe = (
        "import sys, clidep\nlight = 'torch' not in sys.modules\n"
        "from transformers import AutoConfig\nconfig_class = clidep.CLIGPT2Config\n"
        "print(light, AutoConfig.for_model('cli_gpt2').__class__ is config_class, callable(clidep.from_gpt2),"
        " clidep.param_count(config_class(n_embd=64, n_layer=2, n_head=4, vocab_size=101, n_positions=64)))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    expected = param_count(CLIGPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=101, n_positions=64))
    assert proc.stdout.split() == ["True", "True", "True", str(expected)], proc.stderr[-1000:]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(layer_widths=[64, 64]), "layer_widths has 2 entries but n_layer=4"),
        (dict(layer_widths=[64, 40, 64, 64]), r"layer_widths\[1\]=40 is not a positive multiple of its head size 16"),
        (dict(layer_head_dims=[16, 16]), "layer_head_dims has 2 entries but n_layer=4"),
        (dict(layer_widths=[64, 0, 64, 64]), r"layer_widths\[1\]=0"),
    ],
)
def test_config_rejects_bad_schedules(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CLIGPT2Config(vocab_size=101, n_embd=64, n_layer=4, n_head=4, **kwargs)


def test_head_dim_makes_small_widths_reachable():
    config = CLIGPT2Config(vocab_size=101, n_embd=64, n_layer=2, n_head=4, head_dim=8, layer_widths=[64, 24])
    assert config.kv_shapes == [(8, 8), (3, 8)]
    mixed = CLIGPT2Config(
        vocab_size=101, n_embd=64, n_layer=3, n_head=4, layer_widths=[64, 36, 64], layer_head_dims=[16, 12, 16]
    )
    assert mixed.kv_shapes == [(4, 16), (3, 12), (4, 16)]
    model = CLIGPT2LMHeadModel(mixed).eval()
    ids = torch.randint(0, 101, (1, 7))
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(
        out,
        model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, pad_token_id=0, use_cache=False
        ),
    )


def test_a_saved_model_opens_where_clidep_is_not_installed(tmp_path):
    """save_pretrained writes auto_map and the model's code: trust_remote_code=True needs no clidep.

    "Where clidep is not installed" is a separate virtual environment that sees this one's
    packages (torch, transformers) through a path file, which Python reads without running the
    path files of the folder it adds: clidep's editable install is one of those, so that
    interpreter cannot import clidep (checked before the model is opened).
    """
    import subprocess

    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["ragged"])).eval()
    model.save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "config.CLIGPT2Config",
        "AutoModelForCausalLM": "modeling.CLIGPT2LMHeadModel",
    }
    probe = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('clidep') is None, 'clidep is importable here'\n"
        "import torch\nfrom transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True)\n"
        "print(type(m).__module__.split('.')[0], m.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=8, do_sample=False,"
        " pad_token_id=0)[0].tolist())"
    )
    proc = subprocess.run(
        [python_without_clidep(tmp_path), "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    module, tokens = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    with torch.no_grad():
        ref = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=8, do_sample=False, pad_token_id=0)[0].tolist()
    assert module == "transformers_modules" and json.loads(tokens) == ref
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # clidep's own class, no remote code
    assert type(reloaded) is CLIGPT2LMHeadModel
