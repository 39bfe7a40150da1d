"""Options declared once: the typed config is the flag, the default, the range and the record."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from clidep.bench.config import BenchConfig
from clidep.commands.demo import DemoConfig
from clidep.compress.config import AnalyzeConfig, CompressConfig
from clidep.errors import ClidepError
from clidep.export.config import ExportConfig
from clidep.options import entries, flag
from clidep.quality.config import EvalConfig
from clidep.runtime.config import GenerateConfig


def _flags_of(command: str) -> dict[str, object]:
    """The --flags of a clidep command and their defaults, as Typer sees them."""
    import typer

    from clidep.app import app

    group = typer.main.get_command(app)
    cmd = group.commands[command]
    return {opt: p.default for p in cmd.params for opt in p.opts if opt.startswith("--")}


CONFIGS = {
    "compress": (CompressConfig, {"--out", "--resume", "--overwrite"}),
    "analyze": (AnalyzeConfig, {"--out", "--overwrite"}),
    "eval": (EvalConfig, {"--json", "--reference"}),
    "export": (ExportConfig, {"--out", "--overwrite"}),
    "generate": (GenerateConfig, {"--prompt"}),
    "bench": (BenchConfig, {"--device", "--out", "--overwrite"}),
    "demo": (DemoConfig, {"--out"}),
}


@pytest.mark.parametrize("command", CONFIGS)
def test_every_config_field_is_a_flag_with_its_default(command):
    config, call_level = CONFIGS[command]
    flags = _flags_of(command)
    for f in dataclasses.fields(config):
        assert flag(f.name) in flags, f"{f.name} has no flag"
        given = flags[flag(f.name)]
        if f.metadata.get("items") and given is not None:  # a list option: its text parses to the config's tuple
            given = entries(flag(f.name), given, f.metadata)
        assert given == f.default, f"{flag(f.name)}: the flag's default differs from the config's"
    assert set(flags) - {flag(f.name) for f in dataclasses.fields(config)} == call_level


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(steps=0), "--steps must be at least 1, got 0"),
        (dict(lr=-1.0), "--lr must be above 0, got -1.0"),
        (dict(alpha=2.0), "--alpha must be in [0, 1], got 2"),
        (dict(collapse_tol=1.5), "--collapse-tol must be in (0, 1], got 1.5"),
        (dict(ratio=float("nan")), "--ratio must be a finite number, got nan"),
        (
            dict(method="pruning"),
            "unknown --method 'pruning': choose cli, uniform, auto, layercollapse, cli+layercollapse",
        ),
        (dict(init="zeros"), "unknown --init 'zeros'"),
    ],
)
def test_each_field_is_checked_when_the_config_is_built(fields, message):
    with pytest.raises(ClidepError, match=re.escape(message)):
        CompressConfig(**fields)


def test_a_new_run_needs_one_size_and_one_budget():
    CompressConfig(width=32).check()  # field ranges alone hold
    with pytest.raises(ClidepError, match="exactly one of --ratio, --params, --width, --match or a budget"):
        CompressConfig(steps=10).check_new_run()
    with pytest.raises(ClidepError, match="exactly one of --tokens or --steps"):
        CompressConfig(method="slim", width=32).check_new_run()
    CompressConfig(method="slim", width=32, steps=10).check_new_run()
    with pytest.raises(ClidepError, match=r"--method grid chooses its widths.*\(--width sizes --method slim"):
        CompressConfig(method="grid", width=32, steps=10).check_new_run()


def test_changed_names_only_options_given_away_from_their_defaults():
    stored = CompressConfig(width=32, steps=10, lr=0.01).to_dict()
    assert CompressConfig().changed(stored) == []  # nothing given: the stored run's values apply
    assert CompressConfig(lr=0.02, seed=3).changed(stored) == [("--lr", 0.02, 0.01), ("--seed", 3, 0)]


def test_the_config_is_a_keyword_only_library_call(tiny_setup, tmp_path):
    from clidep.commands.compress import compress

    with pytest.raises(TypeError, match="give a CompressConfig, or its fields as keywords, not both"):
        compress(str(tiny_setup / "teacher"), tmp_path / "o", "cli")
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        compress(str(tiny_setup / "teacher"), tmp_path / "o", learning_rate=0.1)
    config = CompressConfig(
        method="cli",
        width=32,
        protect="0,3",
        steps=2,
        batch_size=8,
        seq_len=64,
        eval_every=0,
        warmup=1,
        data=str(tiny_setup / "train.txt"),
    )
    compress(str(tiny_setup / "teacher"), tmp_path / "s", config, log=lambda m: None)
    run = json.loads((tmp_path / "s" / "run.json").read_text())
    assert run["options"] == {"teacher": str(tiny_setup / "teacher"), **config.to_dict()}
    assert run["train"]["warmup"] == 1 and run["train"]["steps"] == 2  # every training setting is recorded


def test_a_list_option_is_a_tuple_from_text_or_a_list_and_resume_compares_it_with_either_form():
    """--depth 32,512 on the command line and depth=[32, 512] in a library call are the same setting; a
    run.json holds it as a list, and one an older clidep wrote holds the text: --resume compares entries."""
    from clidep.bench.config import BenchConfig

    assert BenchConfig(depth="32, 512").depth == BenchConfig(depth=[32, 512]).depth == (32, 512)
    auto = CompressConfig(method="auto", ratio=2.0, gamma="0.5,1")
    assert auto.gamma == (0.5, 1.0) and auto.to_dict()["gamma"] == [0.5, 1.0]
    assert auto.changed({"gamma": "0.5,1"}) == [] and auto.changed({"gamma": [0.5, 1]}) == []
    assert auto.changed({"gamma": "0.25"}) == [("--gamma", "0.5,1", "0.25")]
    with pytest.raises(ClidepError, match="--gamma must be in \\[0, 16\\], got 17"):
        CompressConfig(method="auto", ratio=2.0, gamma=[0.5, 17])


def test_every_compress_option_has_a_heading_and_a_method_option_is_refused_under_any_other_method():
    """The option's own declaration (group, methods) is what --help lists it under and what refuses it."""
    from clidep.compress.config import METHODS
    from clidep.options import method_list

    fields = dataclasses.fields(CompressConfig)
    assert all(f.metadata["group"] for f in fields)
    given = {
        "protect": "0",
        "scorer": ["grad"],
        "gamma": [2.0],
        "search_steps": 3,
        "head_size": 32,
        "depth_scorer": "ntk",
        "layers": "0",
        "lc": 2.0,
        "collapse_tol": 0.1,
    }
    owned = {f.name: f.metadata["methods"] for f in fields if f.metadata["methods"]}
    assert owned.keys() == given.keys()
    for name, methods in owned.items():
        CompressConfig(method=methods[0], ratio=2.0, steps=1, **{name: given[name]}).refuse_other_methods(methods[0])
        for other in (m for m in METHODS if m not in methods):
            with pytest.raises(ClidepError, match=re.escape(f"{flag(name)} applies to {method_list(methods)} only")):
                CompressConfig(method=other, ratio=2.0, steps=1, **{name: given[name]}).check_new_run()
    default = next(f.default for f in fields if f.name == "method")
    hint = f"(the default method is {default}: add --method cli)"  # the user who gave no --method hears it
    with pytest.raises(ClidepError, match=re.escape(hint)):
        CompressConfig(ratio=2.0, steps=1, protect="0").check_new_run()


def test_a_list_option_without_a_default_compares_on_resume_too():
    """--threads has no default (None): comparing a call with a stored run neither crashes nor names it unchanged."""
    from clidep.bench.config import BenchConfig

    assert BenchConfig(threads="1,2").changed({"threads": [1, 2]}) == []
    assert BenchConfig(threads="1,2").changed({"threads": None}) == [("--threads", "1,2", None)]
    assert BenchConfig().changed({"threads": "1"}) == []


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ["export", "M", "--out", "O", "--int4", "--plain-onnx", "--int4-table-bits", "8"],
            "--int4-table-bits applies",
        ),
        (["export", "M", "--out", "O", "--gguf-types", "f16,q8_0,q4_0"], "--gguf-types applies to --gguf only"),
        (["export", "M", "--out", "O", "--opset", "17"], "--opset applies to --plain-onnx only"),
        (
            ["compress", "M", "--out", "O", "--ratio", "2", "--steps", "5", "--warmup", "20"],
            "--warmup 20 exceeds the run's 5 steps",
        ),
    ],
)
def test_a_flag_given_at_its_default_is_still_given(args, says, capsys):
    """A flag the user typed is checked even when its value is the default (the config keeps which flags were
    typed): --int4-table-bits 8 with --plain-onnx was accepted and did nothing."""
    from clidep.app import main

    assert main(args) == 2
    assert says in capsys.readouterr().err


def test_a_library_keyword_at_its_default_is_not_given():
    """A wrapper may pass every keyword on at its default (tests reset a helper's settings that way); only a
    value away from the default counts there."""
    plain = ExportConfig(int4=True, plain_onnx=True, int4_table_bits=8)
    assert not plain.given("int4_table_bits") and plain.given("plain_onnx")
    with pytest.raises(ClidepError, match="--int4-table-bits applies"):
        ExportConfig(int4=True, plain_onnx=True, int4_table_bits=4)
