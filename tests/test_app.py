"""The command line: instant help, one-line errors with non-zero exits, eval as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from clidep.app import main


def test_help_lists_every_command_without_loading_torch():
    probe = (
        "import sys, time\nt = time.perf_counter()\nfrom clidep.app import main\ncode = main(['--help'])\n"
        "print(code, 'torch' in sys.modules, time.perf_counter() - t)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    code, torch_loaded, seconds = proc.stdout.strip().splitlines()[-1].split()
    assert (code, torch_loaded) == ("0", "False"), "clidep --help must not import torch"
    assert float(seconds) < 1.0  # 0.2-0.3 s on a 2-core machine; torch alone takes ~2 s
    for command in ("analyze", "compress", "eval", "export", "generate", "bench", "devices", "demo"):
        assert f"│ {command} " in proc.stdout  # each command's row in the help table


def test_runtime_imports_no_torch_without_any_setting():
    """The device runs numpy + ONNX Runtime only: the runtime package must not pull the training stack."""
    probe = (
        "import sys\nimport clidep, clidep.runtime.runner, clidep.commands.generate, clidep.runtime.benchrun\n"
        "print(sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIDEP_")}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_eval_json_on_a_small_file(teacher_dir, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("The tower is 324 metres tall, about the same height as an 81-storey building. " * 20)
    common = ["eval", str(teacher_dir), "--data", str(text), "--context", "64", "--stride", "32", "--json"]
    assert main(common) == 0  # in-process: what `clidep eval ... --json` prints on stdout
    result = json.loads(capsys.readouterr().out)
    assert result["context"] == 64 and result["stride"] == 32 and result["tokens"] > 100
    assert 1.0 < result["ppl"] < 8192 / 10  # far better than a uniform guess over the 8k vocabulary
    assert main([*common, "--max-tokens", "100"]) == 0
    head = json.loads(capsys.readouterr().out)
    assert head["tokens"] == 100 and head["ppl"] != result["ppl"]  # only the start of the text is scored
