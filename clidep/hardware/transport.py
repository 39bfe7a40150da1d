"""Where a runner process runs: here (``python -m clidep.runtime.benchrun``) or on a device over ssh.

Either way it gets the runner's arguments and returns its JSON record; a failure is a
``RuntimeError`` carrying the runner's last line, which becomes that model's row.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from clidep.errors import ClidepError

PACKAGE = Path(__file__).resolve().parents[1]  # clidep/, copied whole to a remote device


def die_with_parent() -> None:
    """In the runner's process before exec: Linux sends it SIGKILL when bench dies, however bench dies
    (an interrupted bench kills its runner itself: subprocess.run does on any exception)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the exception path above still ends the runner


def run_local(args: list[str], timeout: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "clidep.runtime.benchrun", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=die_with_parent if sys.platform == "linux" else None,
    )
    if proc.returncode:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"runner exited with {proc.returncode}")
    return json.loads(proc.stdout)


def _ssh(ssh_config: str | None) -> list[str]:
    """ssh's options for --remote: BatchMode (never a password prompt), and -F SSH_CONFIG when given."""
    return ["-o", "BatchMode=yes", *(["-F", ssh_config] if ssh_config else [])]


def check_remote(host: str, ssh_config: str | None = None, python: str = "python3") -> None:
    proc = subprocess.run(
        [
            "ssh",
            *_ssh(ssh_config),
            "-o",
            "ConnectTimeout=5",
            host,
            f"{shlex.quote(python)} -c 'import onnxruntime, numpy'",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode:
        why = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        raise ClidepError(
            f"cannot use remote host '{host}' over ssh ({why}); it needs key-based ssh, and {python} "
            "with numpy and onnxruntime (--remote-python)"
        )


def run_remote(
    host: str, args: list[str], files: list[Path], timeout: int, ssh_config: str | None = None, python: str = "python3"
) -> dict:
    """Copy the runner and the files to HOST, run there, return its record."""
    ssh = ["ssh", *_ssh(ssh_config), host]
    work = subprocess.run([*ssh, "mktemp -d"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(
        ["scp", "-q", *_ssh(ssh_config), "-r", str(PACKAGE), *map(str, files), f"{host}:{work}/"],
        check=True,
        timeout=timeout,
    )
    sent = {str(p) for p in files}
    remote_args = [f"{work}/{Path(a).name}" if a in sent else a for a in args]
    cmd = f"cd {work} && PYTHONPATH={work} {shlex.quote(python)} -m clidep.runtime.benchrun {shlex.join(remote_args)}"
    proc = subprocess.run([*ssh, cmd], capture_output=True, text=True, timeout=timeout)
    subprocess.run([*ssh, f"rm -rf {work}"], capture_output=True)
    if proc.returncode:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["remote runner failed"])[-1])
    return json.loads(proc.stdout)
