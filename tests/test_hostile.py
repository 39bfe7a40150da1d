"""Hostile inputs across every command: one ``error:`` line, exit 2, no traceback, nothing touched.

Each case names the command line (``{placeholders}`` are files of the shared ``world`` below),
a piece of the message the user must see, and its kind: ``loss`` (the input or an earlier
result would have been destroyed), ``wrong`` (a number would have been printed or saved from
a broken model or a meaningless setting) or ``crash`` (a traceback). Every case also checks
that no file under the world changed and that a fresh output location was not created.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from clidep.cli import main

LONG_PROMPT = "the history of the city " * 40  # more tokens than the tiny teacher's 128 positions

CASES = [
    # -- data loss: an output location that is an input, or an existing result
    ("loss", "compress {teacher} --out {teacher} --overwrite --width 32 --steps 1", "overlaps the input"),
    ("loss", "compress {teacher} --out {teacher}/student --overwrite --width 32 --steps 1", "overlaps the input"),
    ("loss", "compress {teacher} --out {root} --overwrite --width 32 --steps 1", "overlaps the input"),
    ("loss", "compress {teacher} --out {student} --overwrite --width 0 --steps 1", "--width must be at least 1"),
    ("loss", "compress {teacher} --out {student} --width 32 --steps 1", "pass --resume to continue it"),
    ("loss", "compress {teacher} --out {onnx} --width 32 --steps 1", "pass --overwrite"),
    ("loss", "compress {teacher} --out {fresh} --width 32 --steps 1 --data {teacher}/model.safetensors", "not UTF-8"),
    ("loss", "compress {teacher} --out {fresh} --width 32 --steps 1 --data {fresh}", "no training data"),
    ("loss", "export {teacher} --out {teacher} --overwrite", "overlaps the input"),
    ("loss", "export {student} --out {onnx}", "pass --overwrite"),
    ("loss", "export {teacher} --out {onnx} --overwrite --ppl-tokens -5", "--ppl-tokens must be at least 0"),
    ("loss", "export {teacher} --out {onnx} --overwrite --ppl-data {empty}", "is empty"),
    ("loss", "bench {onnx} --device host --out {analysis}", "pass --overwrite"),
    ("loss", "bench {onnx} --device host --out {onnx} --overwrite", "overlaps the input"),
    ("loss", "analyze {teacher} --out {analysis}", "pass --overwrite"),
    ("loss", "analyze {teacher} --out {teacher} --overwrite", "overlaps the input"),
    ("loss", "analyze {teacher} --out {analysis} --overwrite --samples 0", "--samples must be at least 1"),
    # -- wrong numbers: broken checkpoints and meaningless settings
    ("wrong", "eval {missing}", "weights missing for its config.json: transformer.h.1.mlp.c_fc.weight"),
    ("wrong", "eval {unexpected}", "weights unexpected for its config.json: transformer.h.3"),
    ("wrong", "eval {reshaped}", "weights of the wrong shape"),
    ("wrong", "export {missing} --out {fresh}", "weights missing"),
    ("wrong", "analyze {missing} --out {fresh}", "weights missing"),
    ("wrong", "compress {missing} --out {fresh} --method cli --width 32 --protect 0,3 --steps 1", "weights missing"),
    ("wrong", "compress {teacher} --out {student} --resume --lr 0.5", "changes --lr 0.5 (the run has 0.001)"),
    ("wrong", "compress {teacher} --out {student} --resume --steps 9 --seed 3", "--steps 9 (the run has 1), --seed 3"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 0", "--steps must be at least 1"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --tokens -100", "--tokens must be at least 1"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 1 --seq-len 0", "--seq-len must be at least 2"),
    ("wrong", "compress {teacher} --out {fresh} --params 99999999 --steps 1", "is not below the teacher's"),
    ("wrong", "compress {teacher} --out {fresh} --ratio nan --steps 1", "--ratio must be a finite number, got nan"),
    ("wrong", "compress {teacher} --out {fresh} --ratio inf --steps 1", "--ratio must be a finite number, got inf"),
    ("wrong", "compress {teacher} --out {fresh} --ratio 0.8 --steps 1", "--ratio must be above 1, got 0.8"),
    ("wrong", "compress {teacher} --out {fresh} --width 64 --steps 1", "--width 64 must be below the teacher's width 64"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 1 --batch-size 0", "--batch-size must be at least 1"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 1 --lr 0", "--lr must be above 0, got 0.0"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 1 --lr nan", "--lr must be a finite number, got nan"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 1 --alpha 1.5", "--alpha must be in [0, 1]"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 1 --temperature 0", "--temperature must be above 0"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 1 --eval-every -1", "--eval-every must be at least 0"),
    ("wrong", "compress {teacher} --out {fresh} --method layercollapse --layers 1 --steps 1 --collapse-tol 0",
     "--collapse-tol must be above 0"),
    ("wrong", "compress {teacher} --out {fresh} --method layercollapse --layers 1 --steps 1 --collapse-tol 2",
     "--collapse-tol must be in (0, 1], got 2"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 1 --grad-clip 0", "--grad-clip must be above 0"),
    ("wrong", "compress {teacher} --out {fresh} --width 32 --steps 1 --method nope", "unknown --method 'nope'"),
    ("wrong", "compress {teacher} --out {fresh} --method layercollapse --layers 1 --steps 1 --lc -1", "--lc must be"),
    ("wrong", "eval {teacher} --context 0", "--context must be at least 2"),
    ("wrong", "eval {teacher} --stride 0", "--stride must be at least 1"),
    ("wrong", "eval {teacher} --context 64 --stride 64", "--stride must be between 1 and 63"),
    ("wrong", "eval {teacher} --batch-size 0", "--batch-size must be at least 1"),
    ("wrong", "eval {teacher} --data {one_token}", "a perplexity needs at least 2"),
    ("wrong", "export {teacher} --out {fresh} --ppl-tokens -5", "--ppl-tokens must be at least 0"),
    ("wrong", "export {teacher} --out {fresh} --calib-samples 0", "--calib-samples must be at least 1"),
    ("wrong", "export {teacher} --out {fresh} --opset 99", "--opset must be in [17, 20]"),
    ("wrong", "generate {onnx} --prompt hi --temperature -1", "--temperature must be in [0, 100]"),
    ("wrong", "generate {onnx} --prompt hi --top-k -3", "--top-k must be at least 0"),
    ("wrong", "generate {onnx} --prompt hi --max-new-tokens 0", "--max-new-tokens must be at least 1"),
    ("wrong", "generate {onnx} --prompt '" + LONG_PROMPT + "'", "so it can add none"),
    ("wrong", "bench {onnx} --device {nan_profile} --out {fresh}", "must be a finite positive number (got nan)"),
    ("wrong", "bench {onnx} --device host --out {fresh} --threads 0", "--threads needs at least one positive count"),
    ("wrong", "bench {onnx} --device host --out {fresh} --threads 1,two", "--threads must be comma-separated integers"),
    ("wrong", "bench {onnx} --device host --out {fresh} --reps 0", "--reps must be at least 1"),
    ("wrong", "bench {onnx} --device host --out {fresh} --memory-runs 0", "--memory-runs must be at least 1"),
    ("wrong", "bench {onnx} --device host --out {fresh} --ppl-tokens -1", "--ppl-tokens must be at least 0"),
    ("wrong", "bench {onnx} --device host --out {fresh} --depth 32,x", "--depth must be comma-separated integers"),
    ("wrong", "bench {onnx} --device host --out {fresh} --depth 0", "--depth needs at least one positive length"),
    ("wrong", "bench {onnx} --device host --out {fresh} --runtime tflite", "--runtime takes clidep, genai or both"),
    ("wrong", "bench {onnx} --device host --out {fresh} --remote a@b --ssh-config /nonexistent", "--ssh-config '/nonexistent' is not a file"),
    ("wrong", "analyze {teacher} --out {fresh} --probes 0", "--probes must be at least 1"),
    ("wrong", "compress {teacher} --out {fresh} --steps 1 --device pixel-7", "--device sizes a student with --max-decode-ms"),
    ("wrong", "compress {teacher} --out {fresh} --ratio 1.1 --steps 1 --protect 0,3 --method uniform",
     "--protect applies to --method cli, layercollapse or cli+layercollapse, not uniform"),
    ("wrong", "compress {teacher} --out {fresh} --ratio 1.1 --steps 1 --gamma 0.5", "--gamma applies to --method auto only"),
    ("wrong", "compress {teacher} --out {fresh} --steps 1 --max-decode-ms 0.001 --device raspberry-pi-4",
     "no student decodes within 0.001 ms on raspberry-pi-4 at int8"),
    ("wrong", "compress {teacher} --out {fresh} --steps 1 --max-decode-ms 5", "--max-decode-ms needs --device"),
    ("wrong", "compress {teacher} --out {fresh} --steps 1 --max-mb 0.01", "no student fits"),
    ("wrong", "compress {teacher} --out {fresh} --steps 1 --max-mb 500 --ratio 2", "exactly one of --ratio"),
    ("wrong", "compress {teacher} --out {fresh} --steps 1 --max-mb 10 --precision int3", "unknown --precision 'int3': choose fp32, int8, int4"),
    ("wrong", "demo --out {fresh} --ratio 1", "--ratio must be above 1, got 1.0"),
    ("wrong", "demo --out {fresh} --steps 0", "--steps must be at least 1, got 0"),
    ("wrong", "analyze {teacher} --out {fresh} --min-gap nan", "--min-gap must be a finite number, got nan"),
    ("wrong", "analyze {teacher} --out {fresh} --min-gap 1", "--min-gap must be above 1, got 1.0"),
    ("wrong", "analyze {teacher} --out {fresh} --seq-len 1", "--seq-len must be at least 2, got 1"),
    ("wrong", "analyze {teacher} --out {fresh} --seq-len 4096", "--seq-len 4096 must be between 2 and the model's 128 positions"),
    # -- tracebacks before: broken files, unwritable places, parse errors
    ("crash", "eval {empty_weights}", "cannot load weights"),
    ("crash", "eval {truncated}", "cannot load weights"),
    ("crash", "export {empty_weights} --out {fresh}", "cannot load weights"),
    ("crash", "analyze {truncated} --out {fresh}", "cannot load weights"),
    ("crash", "compress {truncated} --out {fresh} --method cli --width 32 --protect 0,3 --steps 1", "cannot load weights"),
    ("crash", "eval {bad_config}", "cannot load model"),
    ("crash", "eval {no_tokenizer}", "cannot load a tokenizer"),
    ("crash", "eval {teacher} --data {empty}", "is empty"),
    ("crash", "eval {teacher} --data {binary}", "is a binary file"),
    ("crash", "eval {teacher} --data {latin1}", "is not UTF-8 text"),
    ("crash", "analyze {teacher} --out {fresh} --data {empty}", "is empty"),
    ("crash", "compress {teacher} --out {fresh} --width 32 --steps 1 --data {binary}", "is a binary file"),
    ("crash", "compress {teacher} --out {fresh} --width 32 --steps 1 --val-data {empty}", "is empty"),
    ("crash", "compress {teacher} --out {fresh} --method cli --width 32 --steps 1 --protect {bad_json}", "not a valid importance report"),
    ("crash", "compress {teacher} --out {bad_run} --resume", "not a valid compress run"),
    ("crash", "export {teacher} --out {fresh} --ppl-data {binary}", "is a binary file"),
    ("crash", "export {teacher} --out /proc/clidep-out", "cannot be written"),
    ("crash", "compress {teacher} --out {empty}/sub --width 32 --steps 1", "cannot be written"),
    ("crash", "compress {teacher} --out {empty} --width 32 --steps 1", "is a file"),
    ("crash", "analyze {teacher} --out {empty}", "is a file"),
    ("crash", "bench {onnx} --device host --out /proc/clidep-out", "cannot be written"),
    ("crash", "bench {bad_manifest} --device host --out {fresh}", "not a valid clidep export manifest"),
    ("crash", "bench {no_variants} --device host --out {fresh}", "lists no variants"),
    ("crash", "eval {teacher} --context abc", "Invalid value for '--context'"),
    ("crash", "compress {teacher} --width 32", "Missing option '--out'"),
    ("crash", "eval {teacher} --bogus", "No such option"),
    ("crash", "frobnicate", "No such command 'frobnicate'"),
]


def _tree(root: Path) -> dict[str, str]:
    """Every file under ROOT (hidden temporaries included) with a digest of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(root.rglob("*")) if p.is_file()}


def _broken_copy(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    edit(dst)
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_setup):
    """A tiny teacher, a finished student with its run, an export, an analysis, and broken copies of each."""
    from clidep.compress.analyze import write_report
    from clidep.export.artifact import export_artifact
    from clidep.compress.pipeline import compress

    root = tmp_path_factory.mktemp("world")
    teacher = Path(shutil.copytree(tiny_setup / "teacher", root / "teacher"))
    train = root / "train.txt"
    shutil.copy(tiny_setup / "train.txt", train)
    compress(str(teacher), root / "student", method="cli", width=32, protect="0,3", data=str(train), batch_size=8, seq_len=64,
             eval_every=0, steps=1, log=lambda m: None)
    export_artifact(teacher, root / "onnx", optimize=False, ppl_tokens=256)
    write_report({"model": str(teacher), "critical_layers": [0], "scores": [
        {"layer": i, "ntk": 1.0 + i, "ntk_per_param": None, "grad": None, "bi": None, "ablation_dppl": None}
        for i in range(4)]}, root / "analysis")

    def drop_tensor(d):
        weights = load_file(d / "model.safetensors")
        weights.pop("transformer.h.1.mlp.c_fc.weight")
        save_file(weights, d / "model.safetensors", metadata={"format": "pt"})

    def edit_config(**changes):
        def edit(d):
            config = json.loads((d / "config.json").read_text())
            (d / "config.json").write_text(json.dumps({**config, **changes}))
        return edit

    files = {
        "missing": _broken_copy(teacher, root / "missing", drop_tensor),
        "unexpected": _broken_copy(teacher, root / "unexpected", edit_config(n_layer=3)),
        "reshaped": _broken_copy(teacher, root / "reshaped", edit_config(vocab_size=8000)),
        "empty_weights": _broken_copy(teacher, root / "empty_weights", lambda d: (d / "model.safetensors").write_bytes(b"")),
        "truncated": _broken_copy(teacher, root / "truncated", lambda d: (d / "model.safetensors").write_bytes(
            (teacher / "model.safetensors").read_bytes()[:5000])),
        "bad_config": _broken_copy(teacher, root / "bad_config", lambda d: (d / "config.json").write_text("{not json")),
        "no_tokenizer": _broken_copy(teacher, root / "no_tokenizer", lambda d: [
            p.unlink() for p in d.iterdir() if p.name.startswith(("tokenizer", "vocab", "merges", "special"))]),
        "bad_manifest": _broken_copy(root / "onnx", root / "bad_manifest", lambda d: (d / "manifest.json").write_text("[1, 2")),
        "no_variants": _broken_copy(root / "onnx", root / "no_variants", lambda d: (d / "manifest.json").write_text('{"variants": 3}')),
        "bad_run": _broken_copy(root / "student", root / "bad_run", lambda d: (d / "run.json").write_text("")),
    }
    texts = root / "texts"
    texts.mkdir()
    (texts / "empty.txt").write_text("  \n")
    (texts / "binary.bin").write_bytes(b"\x00\x01\x02text\x00" * 50)
    (texts / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (texts / "one.txt").write_text("the")
    (texts / "importance.json").write_text("{")
    profile = (Path(__file__).resolve().parents[1] / "devices" / "raspberry-pi-5.toml").read_text()
    (texts / "nan.toml").write_text(profile.replace("mem_bandwidth_gbs = 10.0", "mem_bandwidth_gbs = nan"))
    names = {"root": root, "teacher": teacher, "student": root / "student", "onnx": root / "onnx",
             "analysis": root / "analysis", "empty": texts / "empty.txt", "binary": texts / "binary.bin",
             "latin1": texts / "latin1.txt", "one_token": texts / "one.txt", "bad_json": texts / "importance.json",
             "nan_profile": texts / "nan.toml", **files}
    return root, {k: str(v) for k, v in names.items()}


@pytest.mark.parametrize("kind, command, message", CASES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(CASES)])
def test_hostile_input(kind, command, message, world, tmp_path, capsys):
    import shlex

    root, names = world
    fresh = tmp_path / "fresh"
    argv = [a.format(**names, fresh=fresh) for a in shlex.split(command)]
    if argv[0] == "compress" and "--resume" not in argv:  # the tiny teacher's sizes; no NTK analysis needed
        cli = "--method" in argv and argv[argv.index("--method") + 1] not in ("uniform", "auto")
        argv += [*(["--seq-len", "64"] if "--seq-len" not in argv else []),
                 *(["--protect", "0,3"] if cli and "--protect" not in argv else [])]
    before = _tree(root)
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert _tree(root) == before, "an existing file was changed, removed or added"
    assert not fresh.exists() and not list(tmp_path.glob(".fresh*")), "a refused command left output behind"


def test_the_table_covers_every_kind():
    kinds = [k for k, _, _ in CASES]
    assert len(CASES) >= 60 and {"loss", "wrong", "crash"} == set(kinds)


def test_generation_past_the_positions_returns_the_text_and_warns(world, capsys):
    _, names = world
    prompt = "the history of the city " * 20  # ~100 tokens of the tiny teacher's 128 positions
    assert main(["generate", names["onnx"], "--prompt", prompt, "--max-new-tokens", "64"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(prompt) and len(out) > len(prompt)
    assert "warning: stopped after" in err and "of 64 new tokens at the model's 128 positions" in err


def test_a_full_disk_is_named_before_export_starts(world, tmp_path, capsys, monkeypatch):
    import collections

    _, names = world
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    assert main(["export", names["teacher"], "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "this export needs about" in err and "MB free" in err and not (tmp_path / "o").exists()


def test_overwrite_replaces_only_after_the_new_result_is_complete(world, tmp_path, monkeypatch):
    """An export that fails half-way through --overwrite leaves the old artifact as it was."""
    from clidep.export import artifact
    from clidep.errors import ClidepError

    _, names = world
    old = tmp_path / "old"
    shutil.copytree(names["onnx"], old)
    before = _tree(old)

    def broken_write_json(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr("clidep.files.write_json", broken_write_json)
    with pytest.raises(OSError):
        artifact.export_artifact(names["teacher"], old, overwrite=True, optimize=False, ppl_tokens=256)
    assert _tree(old) == before and not [p for p in tmp_path.iterdir() if p.name.startswith(".old")]
    monkeypatch.undo()
    with pytest.raises(ClidepError, match="pass --overwrite"):
        artifact.export_artifact(names["teacher"], old, optimize=False, ppl_tokens=256)


def test_a_failed_compress_leaves_nothing_that_blocks_the_rerun(world, tmp_path, capsys):
    _, names = world
    out = tmp_path / "s"
    args = ["compress", names["missing"], "--out", str(out), "--method", "cli", "--width", "32", "--protect", "0,3", "--steps", "1",
            "--batch-size", "8", "--seq-len", "64", "--eval-every", "0", "--data", names["root"] + "/train.txt"]
    assert main(args) == 2  # fails after planning, while loading the teacher's weights
    assert not out.exists()
    args[1] = names["teacher"]
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    assert (out / "compress.json").is_file()
