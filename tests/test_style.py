"""One style for the whole tree: ruff's lint rules and its formatter (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing_to_fix():
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]


def test_the_tree_is_formatted_as_ruff_formats_it():
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]


def _lint_imports(config: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(lint), "--config", str(config), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_every_import_runs_down_the_layers_in_pyproject(tmp_path):
    """import-linter's layers contract over every import, those inside functions included; the same check
    with the perplexity function set above the runtime (where it was, in quality/) finds the imports that
    made the old cycle, so the contract sees what it claims to."""
    r = _lint_imports(ROOT / "pyproject.toml")
    assert r.returncode == 0 and "1 kept, 0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-1000:]
    text = (ROOT / "pyproject.toml").read_text()
    moved = text.replace('"clidep.runtime",\n', '"clidep.perplexity",\n    "clidep.runtime",\n', 1).replace(
        "clidep.data | clidep.perplexity | ", "clidep.data | ", 1
    )
    assert moved != text
    (tmp_path / "pyproject.toml").write_text(moved)
    r = _lint_imports(tmp_path / "pyproject.toml")
    assert r.returncode == 1 and "clidep.runtime.probe -> clidep.perplexity" in r.stdout, r.stdout[-3000:]
