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
from transformers import GPT2Config, GPT2LMHeadModel

from clidep import CLIGPT2Config, CLIGPT2LMHeadModel, param_count
from clidep.compress.pipeline import compress
from clidep.model.convert import load_model
from clidep.data import load_tokenizer, read_text
from clidep.compress.distill import latest_checkpoint
from clidep.errors import ClidepError
from clidep.data import tokenize_text
from clidep.compress.student_init import init_from_teacher
from clidep.quality.perplexity import perplexity, torch_logits_fn
from clidep.compress.widths import build, solve

from .test_cli import CLI, run

MEDIUM = CLIGPT2Config(vocab_size=50257, n_positions=1024, n_embd=1024, n_layer=24, n_head=16)


def test_solver_reproduces_the_papers_sizes_from_shapes():
    cli = solve(MEDIUM, "cli", 143_800_000, [0, 23])
    assert cli.widths == [1024] + [496] * 22 + [1024]
    assert abs(cli.params / 143_800_000 - 1) <= 0.03
    assert round(param_count(MEDIUM) / cli.params, 2) == 2.47
    uniform = solve(MEDIUM, "uniform", cli.params, [])
    assert uniform.widths == [560] * 24 and abs(uniform.error) <= 0.02
    config = build(MEDIUM, "cli", cli.width, [0, 23])
    assert config.layer_head_dims[0] == 64 and config.kv_shapes[1] == (8, 62)  # protected blocks keep GPT-2's heads


@pytest.mark.parametrize("ratio", [2.0, 2.47, 3.0, 4.0])
def test_solver_hits_ratios_within_3_percent(ratio):
    sol = solve(MEDIUM, "cli", round(param_count(MEDIUM) / ratio), [0, 23])
    assert abs(param_count(MEDIUM) / sol.params / ratio - 1) <= 0.03
    assert param_count(build(MEDIUM, "cli", sol.width, [0, 23])) == sol.params


def test_solver_counts_the_mlps_that_will_collapse():
    target = round(param_count(MEDIUM) / 2.47)
    plain = solve(MEDIUM, "cli", target, [0, 23])
    folded = solve(MEDIUM, "cli", target, [0, 23], collapse=[5, 6, 7])
    assert folded.width > plain.width  # the collapsed MLPs pay for a wider bottleneck
    config = build(MEDIUM, "cli", folded.width, [0, 23])
    config.mlp_kinds = ["collapsed" if i in (5, 6, 7) else k for i, k in enumerate(config.mlp_kinds)]
    assert param_count(config) == folded.params and abs(folded.error) <= 0.03


def test_unreachable_ratio_names_the_largest_reachable():
    with pytest.raises(ClidepError, match=r"largest reachable ratio (\d+\.\d+)") as err:
        solve(MEDIUM, "cli", round(param_count(MEDIUM) / 20), [0, 23])
    largest = float(err.value.args[0].rsplit("ratio ", 1)[1].rstrip(")"))
    solve(MEDIUM, "cli", round(param_count(MEDIUM) / largest), [0, 23])  # and that one is reachable


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    return load_model(teacher_dir)


def test_teacher_init_starts_close_to_the_teacher(teacher, teacher_dir):
    tok = load_tokenizer(teacher_dir)
    val = tokenize_text(tok, read_text("wiki-en-valid")[0])[:4097]
    calib = torch.from_numpy(tokenize_text(tok, read_text("wiki-en-valid")[0])[-4096:].reshape(16, 256))
    fn = lambda m: perplexity(torch_logits_fn(m.eval()), val, 256, 128, 8).ppl  # noqa: E731
    ref = fn(teacher)
    for method, protect in (("cli", [0, 11]), ("uniform", [])):
        torch.manual_seed(0)
        student = CLIGPT2LMHeadModel(build(teacher.config, method, 84 if method == "cli" else 128, protect))
        random_ppl = fn(student)
        init_from_teacher(student, teacher, calib)
        ppl = fn(student)
        assert ppl < 2.5 * ref < random_ppl / 10, f"{method}: teacher {ref:.1f}, init {ppl:.1f}, random {random_ppl:.1f}"
        if method == "cli":
            for i in protect:
                for (n, a), b in zip(student.transformer.h[i].state_dict().items(), teacher.transformer.h[i].state_dict().values()):
                    assert torch.equal(a, b), f"protected block {i}: {n} differs"
            Q = student.transformer.proj[11].weight  # (d, r): back to full width
            assert torch.allclose(Q.T @ Q, torch.eye(84), atol=1e-4)
            assert torch.equal(student.transformer.proj[1].weight, Q.T)


def tiny_args(root, out, *extra):
    return ["compress", str(root / "teacher"), "--out", str(out), "--data", str(root / "train.txt"), "--width", "32",
            "--protect", "0,3", "--batch-size", "8", "--seq-len", "64", "--eval-every", "0", *extra]


def tiny_compress(root, out, **kw):
    args = dict(method="cli", width=32, protect="0,3", data=str(root / "train.txt"), batch_size=8, seq_len=64,
                eval_every=0, log=lambda m: None)
    return compress(str(root / "teacher"), out, **{**args, **kw})


def test_compress_writes_a_loadable_student(tiny_setup):
    result = tiny_compress(tiny_setup, tiny_setup / "s1", steps=6, save_every=3, eval_every=3)
    out = tiny_setup / "s1"
    for key in ("method", "teacher", "teacher_params", "student_params", "ratio", "layer_widths", "protected", "init",
                "tokens_trained", "steps", "val_ppl", "ppl_curve", "seconds"):
        assert key in result
    assert json.loads((out / "compress.json").read_text())["layer_widths"] == [64, 32, 32, 64]
    assert result["tokens_trained"] == 6 * 8 * 64 and len(result["ppl_curve"]) == 2
    model = load_model(out)
    assert param_count(model.config) == result["student_params"] == sum(p.numel() for p in model.parameters())
    assert (out / "tokenizer.json").exists() and (out / "model.safetensors").exists()


def test_resume_after_kill_reaches_the_same_weights(tiny_setup):
    root = tiny_setup
    steps, every = 40, 5
    straight = tiny_compress(root, root / "straight", steps=steps, save_every=every)
    proc = subprocess.Popen([*CLI, *tiny_args(root, root / "killed", "--steps", str(steps), "--save-every", str(every))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def test_incomplete_checkpoint_is_never_read(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint.old").mkdir()
    (tmp_path / "checkpoint.old" / "COMPLETE").write_text("")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint.old"


def test_two_processes_follow_the_single_process_curve(tiny_setup):
    root = tiny_setup
    one = tiny_compress(root, root / "p1", steps=4, save_every=0)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "clidep",
              *tiny_args(root, root / "p2", "--steps", "4", "--save-every", "0")]
    proc = subprocess.run(launch, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((root / "p2" / "compress.json").read_text())
    # Same global batch split over two processes; DDP averages the gradients. Sums in another
    # order differ in the last bits, which Adam can amplify a little over a few steps.
    assert [s for s, _ in two["loss_curve"]] == [1, 2, 3, 4]
    assert np.allclose([l for _, l in two["loss_curve"]], [l for _, l in one["loss_curve"]], rtol=1e-3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ratio", "0.8"], "--ratio must be above 1"),
        (["--ratio", "60"], "largest reachable ratio"),
        (["--match", "{teacher}"], "is not a clidep model directory"),
        (["--ratio", "2", "--tokens", "10", "--steps", "2"], "exactly one of --tokens or --steps"),
        (["--ratio", "2", "--width", "32"], "exactly one of --ratio, --params, --width or --match"),
    ],
)
def test_compress_bad_input(extra, message, tiny_setup, tmp_path):
    root = tiny_setup
    args = ["compress", str(root / "teacher"), "--out", str(tmp_path / "o"), "--protect", "0,3", "--seq-len", "64",
            *[e.format(teacher=root / "teacher") for e in extra]]
    if "--steps" not in args and "--tokens" not in args:
        args += ["--steps", "1"]
    proc = run(*args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-500:]


@pytest.mark.parametrize("holds, hint", [("notes.txt", "--overwrite"), ("run.json", "--resume")])
def test_compress_refuses_existing_output(tiny_setup, tmp_path, holds, hint):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / holds).write_text("keep me")
    proc = run(*tiny_args(tiny_setup, tmp_path / "o", "--steps", "1"))
    assert proc.returncode == 2 and hint in proc.stderr and "--overwrite" in proc.stderr
    assert ("--resume" in proc.stderr) == (holds == "run.json")  # only a folder holding a run can be resumed
    assert (tmp_path / "o" / holds).read_text() == "keep me"
