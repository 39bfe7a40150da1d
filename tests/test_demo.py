"""clidep demo: the embedded model and the whole offline pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clidep.commands.demo import EMBEDDED
from clidep.data import ENV_VAR
from clidep.stdlib_docs import python_docs

from .conftest import python_without_clidep

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_model_is_small_and_complete():
    files = {p.name for p in EMBEDDED.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= files
    assert sum(p.stat().st_size for p in EMBEDDED.iterdir()) < 6_000_000, "a few MB at most"
    assert json.loads((EMBEDDED / "config.json").read_text())["model_type"] == "gpt2"


def test_python_docs_corpus_is_deterministic_and_held_out():
    """The same documents in this process (torch and transformers loaded) and in a bare one."""
    import hashlib
    import sys

    train, valid = python_docs()
    assert (train, valid) == python_docs()
    assert len(valid) > 20 and not set(train) & set(valid)
    probe = (
        "import hashlib; from clidep.stdlib_docs import python_docs; t, v = python_docs(); "
        "print(hashlib.sha256('\\0'.join(t + ['|'] + v).encode()).hexdigest())"
    )
    bare = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ)
    assert bare.stdout.strip() == hashlib.sha256("\0".join(train + ["|"] + valid).encode()).hexdigest()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, env, cwd): clidep from a wheel built of this checkout, installed into a folder of its own and
    run by a Python that cannot import the checkout, from a folder outside it: what `pip install clidep` gives."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # a copy, so the build's egg-info and build/ stay out of the checkout
    shutil.copytree(ROOT / "clidep", src / "clidep", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)],
        check=True,
        capture_output=True,
    )
    wheel = next((root / "dist").glob("clidep-*.whl"))
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(root / "site"), str(wheel)], check=True, capture_output=True
    )
    (root / "empty").mkdir()  # the offline data folder pointed at nothing: none of this may need it
    env = {**os.environ, "PYTHONPATH": str(root / "site"), ENV_VAR: str(root / "empty"), "HF_HUB_OFFLINE": "1"}
    (root / "elsewhere").mkdir()
    return python_without_clidep(root), env, root / "elsewhere"


def test_the_installed_wheel_lists_devices_and_exports_its_demo_model(installed):
    python, env, cwd = installed
    where = subprocess.run(
        [python, "-c", "import clidep; print(clidep.__file__)"], capture_output=True, text=True, env=env, cwd=cwd
    )
    assert where.stdout.startswith(env["PYTHONPATH"]) and str(ROOT) not in where.stdout
    listed = subprocess.run([python, "-m", "clidep", "devices"], capture_output=True, text=True, env=env, cwd=cwd)
    assert listed.returncode == 0 and "raspberry-pi-5" in listed.stdout and "pixel-7" in listed.stdout, listed.stderr
    model = f"{env['PYTHONPATH']}/clidep/demo_model"
    out = subprocess.run(
        [
            python,
            "-m",
            "clidep",
            "export",
            model,
            "--out",
            "x",
            "--int8",
            "--ppl-data",
            "python-docs-valid",
            "--ppl-tokens",
            "512",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    manifest = json.loads((cwd / "x" / "manifest.json").read_text())
    assert {v["precision"][:4] for v in manifest["variants"]} == {"fp32", "int8"}


def test_demo_of_the_installed_wheel_runs_the_whole_pipeline_without_shared_data(installed, tmp_path):
    python, env, cwd = installed
    proc = subprocess.run(
        [python, "-m", "clidep", "demo", "--out", str(tmp_path / "d"), "--steps", "2"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("teacher", "cli", "uniform"):
        assert (tmp_path / "d" / f"{name}-onnx" / "model.int8.onnx").exists()
    assert (tmp_path / "d" / "analyze" / "importance.json").exists()
    bench = json.loads((tmp_path / "d" / "bench" / "bench.json").read_text())
    assert not bench["projected"] and all("error" not in r for r in bench["models"])
    cli = json.loads((tmp_path / "d" / "cli" / "compress.json").read_text())
    uni = json.loads((tmp_path / "d" / "uniform" / "compress.json").read_text())
    assert abs(uni["student_params"] / cli["student_params"] - 1) <= 0.02
    assert 1.8 <= cli["ratio"] <= 2.2
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("│")}
    for name, result in (("cli", cli), ("uniform", uni)):
        assert f"{result['student_params']:,}" in rows[name] and f"{result['ratio']:.2f}" in rows[name]  # its own row
    for name in ("teacher", "cli", "uniform"):  # every figure of the table a number, none an empty "-"
        cells = [c.strip().rstrip("%") for c in rows[name].split("│")[2:-1]]
        asked = cells if name != "teacher" else cells[:7]  # the teacher is the reference of the last two
        assert len(cells) == 9 and all(float(c.replace(",", "")) > 0 for c in asked), rows[name]
    assert [c.strip() for c in rows["teacher"].split("│")[-3:-1]] == ["-", "-"]
    int8 = {r["name"]: r for r in bench["models"] if r["runtime"] == "clidep" and r["precision"].startswith("int8")}
    assert f"{int8['cli-onnx']['ppl']:.2f}" in rows["cli"], "the int8 ppl column shows bench's clidep row"
    # does the student still answer as the teacher does: its int8 file against the teacher's fp32 graph
    vs = int8["uniform-onnx"]["vs_baseline"]
    assert f"{vs['kld_mean']:.3f}" in rows["uniform"] and f"{vs['top1']:.1%}" in rows["uniform"]
