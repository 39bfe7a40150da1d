"""The command line: instant help, one-line errors with non-zero exits, eval as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-c", "import clidep_cli; clidep_cli.main()"]


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command_without_loading_torch():
    probe = "import sys, clidep_cli\nsys.argv = ['clidep', '--help']\ntry:\n    clidep_cli.main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.stdout.strip().endswith("False"), "clidep --help must not import torch"
    out = proc.stdout
    for command in ("analyze", "compress", "eval", "export", "generate", "bench", "devices", "demo"):
        assert command in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "/no/such/model"], "no model directory at '/no/such/model'"),
        (["eval", "{teacher}", "--data", "no-such-text"], "no text 'no-such-text'"),
        (["eval", "{teacher}", "--context", "4096"], "exceeds the model's 512 positions"),
        (["eval", "{teacher}", "--max-tokens", "100"], "--max-tokens 100 is below the context 512"),
        (["compress", "{teacher}", "--out", "{teacher}/../no-such-out", "--method", "layercollapse", "--layers", "1,2",
          "--ratio", "1.2", "--steps", "1"], "--layers LIST fixes the size of a layercollapse student"),
        (["eval", "{shared}"], "cannot load model"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, message, teacher_dir):
    args = [a.format(teacher=teacher_dir, shared=teacher_dir.parent.parent / "data") for a in args]
    proc = run(*args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_json_on_a_small_file(teacher_dir, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("The tower is 324 metres tall, about the same height as an 81-storey building. " * 20)
    proc = run("eval", str(teacher_dir), "--data", str(text), "--context", "64", "--stride", "32", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["context"] == 64 and result["stride"] == 32 and result["tokens"] > 100
    assert 1.0 < result["ppl"] < 8192 / 10  # far better than a uniform guess over the 8k vocabulary
    head = json.loads(run("eval", str(teacher_dir), "--data", str(text), "--context", "64", "--stride", "32",
                          "--max-tokens", "100", "--json").stdout)
    assert head["tokens"] == 100 and head["ppl"] != result["ppl"]  # only the start of the text is scored
