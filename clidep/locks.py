"""One writer per output at a time, and no writer while a reader runs.

Every command that writes a directory holds an exclusive ``flock`` on a lock file beside it
(``.NAME.lock``) from its first check to its final rename; ``bench`` and ``generate`` hold a
shared one on the export they read. The kernel releases a lock when its process dies, however
it dies, so a lock never outlives its run: a free lock proves that any ``.NAME.*.tmp`` /
``.NAME.*.old`` sibling belongs to a dead run, which the next writer removes (and says so).

The lock file is removed by the last holder; a process that took a lock on a file that was
removed meanwhile takes it again on the new one, so two runs can never both believe they hold it.
Where the folder beside the output cannot be written (a read-only share), a reader goes on
without a lock: nobody can replace the export there either.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from clidep.errors import ClidepError
from clidep.files import temp_prefix


def lock_path(target: Path) -> Path:
    """The lock file of TARGET: a hidden sibling of its real path, so that replacing TARGET never touches it
    and a reader through a symbolic link and a writer through the real path take the same lock."""
    target = Path(target).expanduser().resolve()
    return target.parent / f".{target.name}.lock"


def holders(path: Path) -> list[int]:
    """The pids holding a lock on the file PATH (Linux's /proc/locks; empty where it cannot tell)."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        parts = line.split()
        if "->" in parts:  # a waiter, not a holder
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
            pids.append(int(parts[4]))
    return sorted(set(pids) - {os.getpid()})


def _acquire(path: Path, shared: bool) -> int | None:
    """An open descriptor of PATH locked (shared or exclusive) without waiting; None when it is taken."""
    while True:
        try:  # never through a link: a planted .NAME.lock -> victim would have the victim truncated
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ClidepError(
                    f"the lock file '{path}' is a symbolic link; clidep will not write through it"
                ) from None
            raise
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the last holder removed the file between our open and our lock: take the new one


def _release(path: Path, fd: int) -> None:
    """Drop the lock; the last holder (one that can make its lock exclusive) removes the file first."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                path.unlink()
    except BlockingIOError:
        pass  # another reader still holds it
    finally:
        os.close(fd)


def _busy(target: Path, path: Path, what: str) -> ClidepError:
    pids = holders(path)
    who = f"pid {', '.join(map(str, pids))}" if pids else "another process"
    return ClidepError(
        f"'{target}' is {what} by another clidep run ({who}); wait for it to finish, or choose another --out"
    )


@contextlib.contextmanager
def write_lock(target: str | Path, log: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold the exclusive lock of TARGET for the block; remove dead runs' leftovers beside it first.

    ``ClidepError`` naming the other run's pid when another writer, or a reader, holds it.
    """
    target = Path(target).expanduser()
    if target.name in ("", ".", ".."):
        raise ClidepError(f"--out '{target}' names no directory of its own; give a new directory's name")
    path = lock_path(target)
    made = [p for p in [path.parent, *path.parent.parents] if not p.exists()]  # deepest first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, shared=False)
    except OSError as exc:
        raise ClidepError(f"--out '{target}' cannot be written: {exc.strerror or exc}") from None
    if fd is None:
        raise _busy(target, path, "being written or read")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        clear_leftovers(target, log)
        yield target
    finally:
        _release(path, fd)
        for folder in made:  # the folders this run made for OUT, where it failed to leave anything in them
            with contextlib.suppress(OSError):
                folder.rmdir()


@contextlib.contextmanager
def read_lock(target: str | Path) -> Iterator[Path]:
    """Hold a shared lock of TARGET (an export being read) for the block: a writer is refused meanwhile."""
    target = Path(target).expanduser()
    path = lock_path(target)
    try:
        fd = _acquire(path, shared=True)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            yield target  # a read-only place: nothing can replace the export there
            return
        raise ClidepError(f"cannot lock '{target}' for reading: {exc.strerror or exc}") from None
    if fd is None:
        raise _busy(target, path, "being written")
    try:
        yield target
    finally:
        _release(path, fd)


def clear_leftovers(target: Path, log: Callable[[str], None] | None = None) -> list[Path]:
    """Remove ``.NAME.clidep-XXXXXXXX.tmp`` / ``.old`` / ``.probe`` siblings of TARGET; call with TARGET's write
    lock held.

    Only a run holding that lock makes them (files.temp_prefix), so with the lock ours they belong to runs
    that died. Nothing else is touched: not a compress run's ``.NAME.partial`` (it can be resumed), not a
    user's ``.NAME.2024.old`` that merely looks like ours. Returns what was removed.
    """
    parent = target.absolute().parent
    ours = re.compile(re.escape(temp_prefix(target)) + r"[a-z0-9_]{8}(\.tmp|\.old|\.probe)")
    gone = []
    for p in sorted(parent.iterdir()) if parent.is_dir() else []:
        if not ours.fullmatch(p.name):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        gone.append(p)
    if gone and log is not None:
        log(f"removed {len(gone)} leftover(s) of an interrupted run beside {target}: {', '.join(p.name for p in gone)}")
    return gone
