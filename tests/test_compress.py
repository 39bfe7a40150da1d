"""compress: the width solver, teacher-informed init, distillation, checkpoints, resume, multi-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from clidep import param_count
from clidep.app import main
from clidep.model.convert import load_model

from .conftest import CLI, tiny_compress


def tiny_args(root, out, *extra):
    return [
        "compress",
        str(root / "teacher"),
        "--out",
        str(out),
        "--method",
        "cli",
        "--data",
        str(root / "train.txt"),
        "--val-data",
        str(root / "valid.txt"),
        "--width",
        "32",
        "--protect",
        "0,3",
        "--batch-size",
        "8",
        "--seq-len",
        "64",
        "--eval-every",
        "0",
        *extra,
    ]


def test_compress_writes_a_loadable_student(tiny_setup):
    result = tiny_compress(tiny_setup, tiny_setup / "s1", steps=6, save_every=3, eval_every=3)
    out = tiny_setup / "s1"
    for key in (
        "method",
        "teacher",
        "teacher_params",
        "student_params",
        "ratio",
        "layer_widths",
        "protected",
        "init",
        "tokens_trained",
        "steps",
        "val_ppl",
        "ppl_curve",
        "seconds",
    ):
        assert key in result
    assert json.loads((out / "compress.json").read_text())["layer_widths"] == [64, 32, 32, 64]
    assert result["tokens_trained"] == 6 * 8 * 64 and len(result["ppl_curve"]) == 2
    model = load_model(out)
    assert param_count(model.config) == result["student_params"] == sum(p.numel() for p in model.parameters())
    assert (out / "tokenizer.json").exists() and (out / "model.safetensors").exists()


def test_auto_picks_the_candidate_with_the_lowest_validation_ppl(tiny_setup, tmp_path):
    """--method auto: each (scorer, gamma) is sized to the target and briefly distilled; the student
    has the winner's widths, and compress.json keeps every trial and the arithmetic."""
    logged = []
    result = tiny_compress(
        tiny_setup,
        tmp_path / "auto",
        method="auto",
        width=None,
        protect="auto",
        ratio=1.15,
        scorer="bi",
        gamma="0,1,4",
        search_steps=2,
        steps=2,
        log=logged.append,
    )
    trials = result["auto"]["trials"]
    assert [(t["scorer"], t["gamma"]) for t in trials] == [("-", 0.0), ("bi", 1.0), ("bi", 4.0)]
    best = min(trials, key=lambda t: t["val_ppl"])
    assert (result["auto"]["scorer"], result["auto"]["gamma"]) == (best["scorer"], best["gamma"])
    assert result["layer_widths"] == best["layer_widths"] == load_model(tmp_path / "auto").config.layer_widths
    assert len(set(trials[0]["layer_widths"])) == 1, "gamma 0: the uniform bottleneck"
    assert len({tuple(t["layer_widths"]) for t in trials}) > 1, "the exponents give different schedules"
    assert all(abs(t["params"] / result["student_params"] - 1) < 0.05 for t in trials), "one size for all"
    assert "auto: scorer" in result["arithmetic"] and any("validation ppl" in m for m in logged)
    assert abs(result["ratio"] / 1.15 - 1) <= 0.02


def test_resume_after_kill_reaches_the_same_weights(tiny_setup):
    root = tiny_setup
    steps, every = 40, 5
    straight = tiny_compress(root, root / "straight", steps=steps, save_every=every)
    proc = subprocess.Popen(
        [*CLI, *tiny_args(root, root / "killed", "--steps", str(steps), "--save-every", str(every))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_file = root / "killed" / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state_file.exists() and 10 <= json.loads(state_file.read_text() or "{}").get("step", 0) < steps:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-way"
    assert not (root / "killed" / "compress.json").exists()
    resumed = tiny_compress(root, root / "killed", resume=True)
    assert resumed["steps"] == straight["steps"] == steps
    a, b = load_model(root / "straight").state_dict(), load_model(root / "killed").state_dict()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), f"{name} differs after resume"
    assert [s for s, _ in resumed["loss_curve"]] == list(range(1, steps + 1))
    assert np.allclose([l for _, l in resumed["loss_curve"]], [l for _, l in straight["loss_curve"]], rtol=1e-5)


def test_two_processes_follow_the_single_process_curve(tiny_setup):
    root = tiny_setup
    one = tiny_compress(root, root / "p1", steps=4, save_every=0)
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "clidep",
        *tiny_args(root, root / "p2", "--steps", "4", "--save-every", "0"),
    ]
    proc = subprocess.run(
        launch, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((root / "p2" / "compress.json").read_text())
    # Same global batch split over two processes; DDP averages the gradients. Sums in another
    # order differ in the last bits, which Adam can amplify a little over a few steps.
    assert [s for s, _ in two["loss_curve"]] == [1, 2, 3, 4]
    assert np.allclose([l for _, l in two["loss_curve"]], [l for _, l in one["loss_curve"]], rtol=1e-3)


@pytest.mark.parametrize("holds, hint", [("notes.txt", "--overwrite"), ("run.json", "--resume")])
def test_compress_refuses_existing_output(tiny_setup, tmp_path, holds, hint, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / holds).write_text("keep me")
    code = main(tiny_args(tiny_setup, tmp_path / "o", "--steps", "1"))
    err = capsys.readouterr().err
    assert code == 2 and hint in err and "--overwrite" in err
    assert ("--resume" in err) == (holds == "run.json")  # only a folder holding a run can be resumed
    assert (tmp_path / "o" / holds).read_text() == "keep me"
