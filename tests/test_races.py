"""Runs that meet each other or a signal, in real processes: one writer per output, signals handled as
Ctrl-C is, leftovers of dead runs cleared, and nothing lost or left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clidep.app import main
from clidep.errors import ClidepError
from clidep.locks import clear_leftovers, lock_path, read_lock, write_lock

from .conftest import CLI, ClosedPipe


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(check, what: str, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}*"))


@pytest.fixture(scope="module")
def teacher(tiny_setup):
    return tiny_setup / "teacher"


def _export_args(teacher: Path, out: Path, *extra: str) -> list[str]:
    return ["export", str(teacher), "--out", str(out), "--ppl-tokens", "256", "--no-genai", *extra]


@pytest.fixture(scope="module")
def exported(teacher, tmp_path_factory):
    """One export of the tiny teacher, for the tests that only read it."""
    out = tmp_path_factory.mktemp("exported") / "onnx"
    assert main(_export_args(teacher, out)) == 0
    return out


def test_two_exports_to_one_new_out_the_second_is_refused_naming_the_first(teacher, tmp_path, capsys):
    out = tmp_path / "cc1"
    first = _start(*_export_args(teacher, out, "--int8"))
    _wait_for(lambda: lock_path(out).exists(), "the first export's lock", proc=first)
    assert main(_export_args(teacher, out, "--int4")) == 2  # in-process: the first run is the other process
    second = capsys.readouterr().err
    assert f"'{out}' is being written or read by another clidep run (pid {first.pid})" in second, second[-2000:]
    assert first.wait(300) == 0, first.stderr.read()[-2000:]
    precisions = [v["precision"] for v in json.loads((out / "manifest.json").read_text())["variants"]]
    assert precisions == ["fp32", "int8-weight-only"], "the first export's result is whole and the only one"
    assert _siblings(out) == [], "no lock or temporary left beside OUT"


def test_an_export_being_read_is_not_replaced(teacher, tmp_path, capsys):
    """A reader (bench, generate, eval) holds a shared lock: --overwrite is refused while it reads, naming it."""
    out = tmp_path / "read"
    assert main(_export_args(teacher, out)) == 0
    capsys.readouterr()
    before = (out / "manifest.json").read_bytes()
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from clidep.locks import read_lock\nimport sys, time\n"
            f"with read_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "held"
        assert main(_export_args(teacher, out, "--overwrite")) == 2
        refused = capsys.readouterr().err
        assert f"(pid {reader.pid})" in refused, refused[-2000:]
        assert (out / "manifest.json").read_bytes() == before
        # generate reads beside the reader (both shared), then the lock file goes with the last of them
        assert main(["generate", str(out), "--prompt", "the city", "--max-new-tokens", "4"]) == 0
        assert capsys.readouterr().out.startswith("the city")
        assert lock_path(out).exists(), "the first reader still holds it"
    finally:
        reader.kill()
        reader.wait()
    with write_lock(out):  # killed, the reader's lock went with it; its file is taken, then removed
        pass
    assert not lock_path(out).exists()


def test_a_writer_is_refused_by_a_reader_and_the_reverse_in_process(tmp_path):
    out = tmp_path / "x"
    with write_lock(out):
        with pytest.raises(ClidepError, match="is being written by another clidep run"):
            with read_lock(out):
                pass
    with read_lock(out), read_lock(out):  # two readers share it
        with pytest.raises(ClidepError, match="is being written or read by another clidep run"):
            with write_lock(out):
                pass
    assert not lock_path(out).exists(), "the last holder removes the lock file"


def _compress_args(root: Path, out: Path, save_every: int, steps: int) -> list[str]:
    """A small CLI compress of the tiny teacher into OUT, checkpointed every SAVE_EVERY steps (0: never)."""
    data = ["--data", str(root / "train.txt"), "--batch-size", "4", "--seq-len", "32", "--eval-every", "0"]
    shape = ["--method", "cli", "--width", "32", "--protect", "0,3"]
    return ["compress", str(root / "teacher"), "--out", str(out), *shape, *data,
            "--save-every", str(save_every), "--steps", str(steps)]  # fmt: skip


def test_sigterm_after_a_checkpoint_then_resume_finishes_the_run(tiny_setup, tmp_path, capsys):
    """compress --overwrite works in .OUT.partial; stopped there after a checkpoint, --resume continues it
    and replaces OUT at the end."""
    out = tmp_path / "st1"
    args = _compress_args(tiny_setup, out, save_every=5, steps=60)
    assert main(args[:-1] + ["2"]) == 0  # an earlier finished run in OUT (in-process: no signal needed yet)
    capsys.readouterr()
    old = (out / "compress.json").read_bytes()
    proc = _start(*args, "--overwrite")
    partial = out.parent / ".st1.partial"
    _wait_for(lambda: (partial / "checkpoint" / "COMPLETE").exists(), "a checkpoint", proc=proc)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-2000:]
    assert "error: stopped by SIGTERM" in err and "keeps the checkpoint at step" in err and "--resume" in err
    assert (out / "compress.json").read_bytes() == old, "OUT is untouched until the new student is complete"
    assert main([*args, "--resume"]) == 0
    again = capsys.readouterr().err
    assert f"resuming the run in {partial}" in again and "resumed from" in again, again[-2000:]
    assert json.loads((out / "compress.json").read_text())["steps"] == 60
    assert not partial.exists() and _siblings(out) == []


def test_sigterm_before_the_first_checkpoint_leaves_nothing(tiny_setup, tmp_path):
    out = tmp_path / "st2"
    args = _compress_args(tiny_setup, out, save_every=0, steps=20)
    proc = _start(*args)
    _wait_for(lambda: (out / "run.json").exists(), "run.json", proc=proc)
    proc.send_signal(signal.SIGHUP)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 129 and "error: stopped by SIGHUP" in err, err[-2000:]
    assert not out.exists() and _siblings(out) == [], "nothing that blocks the same command"
    assert main(args) == 0, "the same command runs again, in-process"


def test_resume_without_a_checkpoint_says_what_to_run(tiny_setup, tmp_path, capsys):
    out = tmp_path / "st3"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"teacher": "x"}))
    assert main(["compress", str(tiny_setup / "teacher"), "--out", str(out), "--resume"]) == 2
    got = capsys.readouterr().err
    assert "stopped before its first checkpoint" in got and "with --overwrite instead" in got


def _runner_children(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return [
            c
            for c in psutil.Process(proc.pid).children(recursive=True)
            if "clidep.runtime.benchrun" in " ".join(c.cmdline())
        ]
    except psutil.Error:
        return []


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_bench_leaves_no_runner_behind(exported, tmp_path, sig):
    out = exported
    proc = _start(
        "bench",
        str(out),
        "--device",
        "host",
        "--out",
        str(tmp_path / "b"),
        "--reps",
        "1000",
        "--runtime",
        "clidep",
        "--prompt-lens",
        "8",
        "--depth",
        "8",
        "--gen",
        "64",
    )
    _wait_for(lambda: _runner_children(proc), "the runner process", proc=proc)
    child = _runner_children(proc)[0].pid
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == (143 if sig == signal.SIGTERM else -9), err[-2000:]
    _wait_for(lambda: _gone(child), f"runner {child} to end", timeout=20)
    assert not (tmp_path / "b").exists()
    if sig == signal.SIGTERM:
        assert _siblings(out) == [] and _siblings(tmp_path / "b") == []


def test_kill_9_during_export_overwrite_then_a_clean_rerun(teacher, tmp_path, capsys):
    """kill -9 at several moments of `export --overwrite` (the last while the swap runs, where it lands):
    OUT is always a whole export, and the next run removes what the dead ones left, saying so."""
    from clidep.runtime.verify import check_variant, load_manifest

    out = tmp_path / "k9"
    assert main(_export_args(teacher, out)) == 0

    def whole() -> None:
        for v in load_manifest(out).variants:
            check_variant(out, v)

    for delay in (2.5, None):  # an export takes about 6 s here; None: at the swap itself
        proc = _start(*_export_args(teacher, out, "--overwrite", "--int8"))
        if delay is None:
            _wait_for(lambda: list(out.parent.glob(".k9.*.old")) or proc.poll() is not None, "the swap")
        else:
            time.sleep(delay)
        proc.kill()
        proc.wait()
        whole()
    dead = out.parent / ".k9.clidep-ab12cd34.old"  # as a kill inside swap_into_place's delete leaves it
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "half.onnx").write_bytes(b"x" * 1000)
    (out.parent / ".k9.partial").mkdir()  # not ours to remove: a compress run's resumable work
    capsys.readouterr()
    assert main(_export_args(teacher, out, "--overwrite")) == 0
    again = capsys.readouterr().err
    assert "leftover(s) of an interrupted run beside" in again and ".k9.clidep-ab12cd34.old" in again, again[-2000:]
    whole()
    assert _siblings(out) == [".k9.partial"]


def test_leftovers_are_only_the_temporaries_of_dead_runs(tmp_path):
    out = tmp_path / "m.v1"
    keep = [".m.v1.partial", ".m.v1.lock", ".m.v1.notes.txt.bak", ".m.v1x.clidep-abc_1234.tmp", "m.v1.abc.tmp"]
    keep += [".m.v1.2024.old", ".m.v1.draft.tmp", ".m.v1.abc_1234.tmp", ".m.v1.clidep-abc.tmp"]  # look-alikes: a user's
    gone = [".m.v1.clidep-abc_1234.tmp", ".m.v1.clidep-zz9zz9zz.old", ".m.v1.clidep-kkkkkkkk.probe"]
    for name in keep + gone:
        (tmp_path / name).mkdir()
    said = []
    removed = clear_leftovers(out, said.append)
    assert sorted(p.name for p in removed) == sorted(gone) and len(said) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_sigterm_during_export_leaves_no_temporary(teacher, tmp_path):
    out = tmp_path / "t1"
    proc = _start(*_export_args(teacher, out))
    _wait_for(lambda: list(tmp_path.glob(".t1.*.tmp")), "the export's temporary directory", proc=proc)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err[-2000:]
    assert not out.exists() and _siblings(out) == []


def test_the_cache_folder_follows_the_environment_and_is_refused_when_unusable(tmp_path, monkeypatch):
    from clidep.files import cache_dir

    for var in ("CLIDEP_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "nonexistent"))
    with pytest.raises(ClidepError, match="home directory .*nonexistent, which does not exist; set CLIDEP_CACHE"):
        cache_dir("digests")
    assert not (tmp_path / "nonexistent").exists(), "clidep never creates a home directory"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("a file, not a folder")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(
        ClidepError, match=r"\.cache/clidep/digests cannot be made \(Not a directory\); set CLIDEP_CACHE"
    ):
        cache_dir("digests")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("tokens") == tmp_path / "xdg" / "clidep" / "tokens"
    monkeypatch.setenv("CLIDEP_CACHE", str(tmp_path / "mine"))
    assert cache_dir("tokens") == tmp_path / "mine" / "tokens" and (tmp_path / "mine" / "tokens").is_dir()


def test_generate_with_an_unusable_cache_is_one_line(exported, tmp_path):
    out = exported
    env = {k: v for k, v in os.environ.items() if k not in ("CLIDEP_CACHE", "XDG_CACHE_HOME")}
    got = subprocess.run(
        [*CLI, "generate", str(out), "--prompt", "hi"],
        capture_output=True,
        text=True,
        env={**env, "HOME": str(tmp_path / "nowhere")},
        timeout=120,
    )
    assert got.returncode == 2 and got.stderr.count("error:") == 1 and "set CLIDEP_CACHE" in got.stderr
    assert "Traceback" not in got.stderr and not (tmp_path / "nowhere").exists()


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_untouched(teacher, tmp_path):
    """The symlink attack on a shared folder: `.OUT.lock -> a victim's file`. A real export run refuses
    it in one line and never opens the victim for writing."""
    victim = tmp_path / "victim.txt"
    victim.write_text("a user's notes\n")
    out = tmp_path / "shared" / "onnx"
    out.parent.mkdir()
    lock_path(out).symlink_to(victim)
    proc = subprocess.run([*CLI, *_export_args(teacher, out)], capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "is a symbolic link" in errors[0], proc.stderr[-2000:]
    assert victim.read_text() == "a user's notes\n" and lock_path(out).is_symlink() and not out.exists()


def test_a_reader_through_a_link_and_a_writer_through_the_real_path_take_one_lock(exported, tmp_path):
    link = tmp_path / "via-link"
    link.symlink_to(exported)
    assert lock_path(link) == lock_path(exported)
    with read_lock(link):
        with pytest.raises(ClidepError, match="is being written or read by another clidep run"):
            with write_lock(exported):
                pass


def test_a_symlinked_out_is_refused_and_the_link_kept(exported, tmp_path, capsys):
    link = tmp_path / "out-link"
    link.symlink_to(exported)
    before = sorted(p.name for p in exported.iterdir())
    assert main(["bench", str(exported), "--device", "host", "--out", str(link), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is a symbolic link" in err and link.is_symlink() and sorted(p.name for p in exported.iterdir()) == before


def test_a_closed_stdout_is_one_line_and_exit_141_not_a_silent_exit(tmp_path):
    """`clidep devices | true`, in real processes: the reader is gone before clidep prints."""
    proc = subprocess.Popen([*CLI, "devices"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(120) == 141, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "standard output was closed" in lines[0] and "Traceback" not in err


def test_bench_into_a_closed_pipe_keeps_its_report(exported, tmp_path, monkeypatch, capsys):
    """The report's files are written before its table is printed, so `bench ... | head` loses nothing."""
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    args = ["bench", str(exported), "--device", "host", "--runtime", "clidep", "--reps", "1", "--gen", "64"]
    assert main([*args, "--prompt-lens", "16", "--depth", "16", "--out", str(tmp_path / "b")]) == 141
    assert {"bench.json", "bench.md", "bench.csv"} <= {p.name for p in (tmp_path / "b").iterdir()}
    assert "standard output was closed" in capsys.readouterr().err


def test_a_tight_address_space_limit_is_one_line_before_anything_starts(tmp_path):
    """`ulimit -v 1000000; clidep export ...`: native code that cannot map memory aborts without a word and
    leaves its lock file; clidep refuses such a limit first, in a real process, touching nothing."""
    import resource

    from clidep.commands.demo import EMBEDDED

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))

    out = tmp_path / "o"
    proc = subprocess.run(
        [*CLI, "export", str(EMBEDDED), "--out", str(out), "--int8"],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        proc.stderr.count("\n") == 1
        and "(ulimit -v) is 1,024 MiB" in proc.stderr
        and "at least 2,048 MiB" in proc.stderr
    )
    assert list(tmp_path.iterdir()) == []
