"""Where a result came from: the commit, the machine, the runtime, the time. Every result file carries it."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path


def git_sha() -> str:
    """The short commit of the clidep checkout ("unknown" outside a git checkout)."""
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True
    )
    return proc.stdout.strip() or "unknown"


def provenance() -> dict:
    return {
        "git_sha": git_sha(),
        "host": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)",
        "python": platform.python_version(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
