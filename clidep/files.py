"""Writing outputs so that a crash never leaves a half-written file that looks valid.

Each writer produces a temporary sibling first and renames it into place (``os.replace`` is
atomic on one filesystem), so a reader sees either the old file or the complete new one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from clidep.errors import ClidepError

#: Every temporary name clidep makes beside a path carries this token (``.NAME.clidep-XXXXXXXX.tmp``), so
#: that the leftover sweep (locks.clear_leftovers) removes only what clidep made, never a user's look-alike.
TEMP_TOKEN = "clidep-"


def temp_prefix(path: Path) -> str:
    """The prefix of PATH's temporary siblings: ``.NAME.clidep-``, followed by mkstemp's random letters."""
    return f".{path.name}.{TEMP_TOKEN}"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data) -> Path:
    """Atomically write ``data`` as indented strict JSON: a NaN or infinity is never written (``ClidepError``
    naming where it is)."""
    bad = non_finite(data)
    if bad:
        raise ClidepError(f"'{path}' would hold a non-finite figure ({bad}); nothing was written")
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def non_finite(data, where: str = "") -> str | None:
    """The dotted key of the first NaN or infinity inside DATA (dicts and lists), or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return f"{where or 'value'} = {data}"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        found = non_finite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def read_json(path: str | Path, what: str) -> dict:
    """A JSON object from PATH; ``ClidepError`` naming WHAT when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClidepError(f"no {what} at '{path}'") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = (
            "not UTF-8"
            if isinstance(exc, UnicodeDecodeError)
            else exc.strerror
            if isinstance(exc, OSError)
            else f"not JSON: {exc.msg} at line {exc.lineno}"
        )
        raise ClidepError(f"'{path}' is not a valid {what} ({why}); re-create it") from None
    if not isinstance(data, dict):
        raise ClidepError(f"'{path}' is not a valid {what} (a JSON object is expected)")
    return data


def make_temp_dir(final: Path) -> Path:
    """An empty directory beside ``final`` (same filesystem, so it can be renamed into place), mode as mkdir's."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_prefix(final), suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(
    out: Path, inputs: Iterable[str | Path | None] = (), *, overwrite: bool = False, option: str = "--out"
) -> Path:
    """Refuse an output location before any work is done, so a mistake never costs a result.

    OUT must not be an input, lie inside one, or contain one (replacing it would delete the
    input); an existing non-empty OUT needs ``overwrite``; a file where a directory should go
    and a location that cannot be written are refused too. Returns OUT.
    """
    out = Path(out).expanduser()
    if out.is_symlink():  # --overwrite would replace the link with a directory and leave the old one aside
        raise ClidepError(
            f"{option} '{out}' is a symbolic link (to '{os.readlink(out)}'); give the directory it points to, or a new name"
        )
    here = out.resolve()
    for given in inputs:
        if given is None or not Path(given).expanduser().exists():
            continue  # hub ids and named texts are not places on disk
        src = Path(given).expanduser().resolve()
        if here == src or src.is_relative_to(here) or here.is_relative_to(src):
            raise ClidepError(f"{option} '{out}' overlaps the input '{given}'; write the result somewhere else")
    if out.exists() and not out.is_dir():
        raise ClidepError(f"{option} '{out}' is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ClidepError(f"{option} '{out}' exists; pass --overwrite to replace it once the new result is complete")
    _check_writable(out, option)
    return out


def _check_writable(out: Path, option: str) -> None:
    """Create (and remove again) a scratch directory where OUT's temporary sibling will go."""
    missing = [p for p in [out.parent, *out.parent.parents] if not p.exists()][::-1]
    try:
        for p in missing:
            p.mkdir()
        os.rmdir(tempfile.mkdtemp(dir=out.parent, prefix=temp_prefix(out), suffix=".probe"))
    except OSError as exc:
        raise ClidepError(f"{option} '{out}' cannot be written: {exc.strerror or exc}") from None
    finally:
        for p in reversed(missing):
            if p.exists() and not any(p.iterdir()):
                p.rmdir()


def swap_into_place(new: Path, out: Path) -> Path:
    """Rename the complete directory NEW to OUT, keeping any old OUT until the last rename.

    The old OUT is first renamed aside (one atomic step), then NEW takes its name (another), and
    only then is the old one deleted: at no moment is OUT half-deleted, and a crash between the
    two renames leaves both complete directories on disk.
    """
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=temp_prefix(out), suffix=".old"))
        os.rmdir(old)
        out.rename(old)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def write_dir(out: Path, write: Callable[[Path], object]):
    """Call ``write(tmp)`` on a fresh directory beside OUT, then swap it into place; returns what WRITE returns.

    A failure (or a kill) while writing leaves OUT as it was.
    """
    tmp = make_temp_dir(out)
    try:
        result = write(tmp)
        swap_into_place(tmp, out)
        return result
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


#: Where clidep keeps what it can make again (tokenised corpora, file digests).
CACHE_ENV = "CLIDEP_CACHE"


def cache_dir(sub: str) -> Path:
    """``$CLIDEP_CACHE/SUB``, else ``$XDG_CACHE_HOME/clidep/SUB``, else ``~/.cache/clidep/SUB``, created.

    ``ClidepError`` naming the variables when that place cannot be made (a home that does not
    exist, a ``.cache`` that is a file, no permission): clidep never creates a home directory.
    """
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "clidep"
    else:
        home = Path.home()
        if not home.is_dir():
            raise ClidepError(
                f"the cache folder would be under the home directory {home}, which does not exist; "
                f"set {CACHE_ENV} (or XDG_CACHE_HOME) to a writable folder"
            )
        root = home / ".cache" / "clidep"
    path = root / sub
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClidepError(
            f"the cache folder {path} cannot be made ({exc.strerror or exc}); set {CACHE_ENV} "
            "(or XDG_CACHE_HOME) to a writable folder"
        ) from None
    return path


def free_space_check(where: Path, needed: int, what: str) -> None:
    """``ClidepError`` naming both figures when the filesystem of WHERE has less than NEEDED bytes free."""
    probe = next(p for p in [where, *where.parents] if p.exists())
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise ClidepError(f"{what} needs about {needed / 1e6:,.0f} MB but {probe} has {free / 1e6:,.0f} MB free")
