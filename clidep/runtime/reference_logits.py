"""A reference's next-token distributions on a text, computed once and kept: ``eval --reference`` and
``bench --ppl --baseline`` compare every file with the same rows instead of running the reference again.

Kept as llama.cpp's ``llama-perplexity --kl-divergence-base`` keeps them: each scored token's log-probabilities
at 16 bits (uint16 steps between the row's smallest and largest, one fp32 minimum and step a row), with the exact
top token and the exact NLL of the token that follows, so top-1 agreement and the reference's perplexity lose
nothing. A row's rounding is at most half a step (the reference teacher's rows span 13 to 27 nats, median 18: 1.4e-4 nats),
which moves a KL divergence by 2.5e-9 nats on average, 8e-9 at most (the teacher against its own kept rows on
4,096 WikiText-test tokens; tests/test_reference_logits.py holds it below 1e-7), under the 1e-6 that
an fp32 file must keep. The same rounded rows are used on the first run and on every later one, so a figure does
not depend on whether the rows were kept.

Kept under ``$CLIDEP_CACHE/reference-logits`` (files.cache_dir), one folder per reference, text and window:
the reference's files' sha256, the token ids' sha256, the context and the stride name it. A folder that does not
read back whole is made again. Rows that would take more than ``MOST_BYTES`` are computed and not kept; only the
``KEEP`` most recently used folders stay.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from clidep.errors import ClidepError
from clidep.files import cache_dir, free_space_check, make_temp_dir, swap_into_place
from clidep.perplexity import LogitsFn, ReferenceRows, chunk_sizes, logsumexp, reference_rows
from clidep.runtime.verify import sha256

FORMAT = 1
#: Rows kept at most (bytes of one folder): 16,384 tokens of GPT-2's 50,257-token vocabulary take 1.6 GB.
MOST_BYTES = 2 * 2**30
#: Folders kept: the most recently used.
KEEP = 4
_STEPS = 65535


def kept_rows(
    reference: Path, reference_fn: LogitsFn, ids: np.ndarray, context: int, stride: int, batch_size: int = 4
) -> Iterator[ReferenceRows]:
    """REFERENCE's rows on the scored tokens of IDS (perplexity.reference_rows, log-probabilities rounded to 16
    bits): read from the cache when they were kept for these files, text and windows, else computed with
    REFERENCE_FN and kept as they go."""
    ids = np.asarray(ids, dtype=np.int64)
    key = _key(reference, ids, context, stride)
    folder = cache_dir("reference-logits") / key
    kept = _read(folder, ids.size - 1)
    if kept is not None:
        os.utime(folder)  # most recently used
        yield from _chunks(kept, chunk_sizes(ids.size, context, stride))
        return
    rows = reference_rows(reference_fn, ids, context, stride, batch_size)
    yield from _keep(folder, rows, ids.size - 1, {"reference": str(reference), "context": context, "stride": stride})


def _key(reference: Path, ids: np.ndarray, context: int, stride: int) -> str:
    """The folder name: the reference's files' digests, the token ids' digest, context, stride and format."""
    h = hashlib.sha256(f"{FORMAT}:{context}:{stride}:".encode())
    for path in _files(reference):
        h.update(f"{path.name}:{sha256(path)}:".encode())
    h.update(hashlib.sha256(ids.tobytes()).digest())
    return h.hexdigest()[:24]


def _files(reference: Path) -> list[Path]:
    """The files a reference's answers come from: a file and its external data (model.onnx.data), or a torch
    folder's config and safetensors."""
    if reference.is_dir():
        return [reference / "config.json", *sorted(reference.glob("*.safetensors"))]
    data = reference.with_name(reference.name + ".data")
    return [reference, data] if data.is_file() else [reference]


def _quantise(rows: ReferenceRows) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 (n, V), float32 (n, 2) minimum and step) of ROWS' log-probabilities."""
    low, high = rows.logp.min(-1), rows.logp.max(-1)
    step = np.maximum((high - low) / _STEPS, np.finfo(np.float32).tiny).astype(np.float32)
    low = low.astype(np.float32)
    q = np.rint((rows.logp - low[:, None]) / step[:, None])
    return np.clip(q, 0, _STEPS).astype(np.uint16), np.stack([low, step], -1)


def _rounded(q: np.ndarray, scale: np.ndarray, top: np.ndarray, nll: np.ndarray) -> ReferenceRows:
    """Rows back from 16 bits: each a distribution again (renormalised), top token and NLL as kept."""
    lp = scale[:, :1].astype(np.float64) + q.astype(np.float64) * scale[:, 1:].astype(np.float64)
    return ReferenceRows(lp - logsumexp(lp), np.asarray(top, np.int64), np.asarray(nll, np.float64))


def _chunks(kept: dict, sizes: Iterator[int]) -> Iterator[ReferenceRows]:
    at = 0
    for n in sizes:
        part = slice(at, at + n)
        yield _rounded(kept["logp"][part], kept["scale"][part], kept["top"][part], kept["nll"][part])
        at += n


def _read(folder: Path, n: int) -> dict | None:
    """The kept arrays of FOLDER (memory-mapped) when they read back whole with N rows, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        kept = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ("logp", "scale", "top", "nll")}
    except (OSError, ValueError):
        if folder.exists():
            print(f"note: the kept reference rows in {folder} do not read back; computing them again", file=sys.stderr)
        return None
    shapes = [kept["logp"].shape[:1], kept["scale"].shape, kept["top"].shape, kept["nll"].shape]
    if meta.get("format") != FORMAT or shapes != [(n,), (n, 2), (n,), (n,)] or meta.get("tokens") != n:
        print(f"note: the kept reference rows in {folder} do not match; computing them again", file=sys.stderr)
        return None
    return kept


def _keep(folder: Path, rows: Iterator[ReferenceRows], n: int, meta: dict) -> Iterator[ReferenceRows]:
    """Yield ROWS rounded to 16 bits, writing them into a temporary folder renamed to FOLDER once all N are
    written (a run stopped part way keeps nothing); rows that cannot be kept are only yielded."""
    first = next(rows)
    rows = itertools.chain([first], rows)
    vocab = first.logp.shape[1]
    if not _room(folder, n * (2 * vocab + 32)):
        for part in rows:
            yield _rounded(*_quantise(part), part.top, part.nll)
        return
    tmp = make_temp_dir(folder)
    try:
        arrays = {
            "logp": np.lib.format.open_memmap(tmp / "logp.npy", "w+", np.uint16, (n, vocab)),
            "scale": np.lib.format.open_memmap(tmp / "scale.npy", "w+", np.float32, (n, 2)),
            "top": np.lib.format.open_memmap(tmp / "top.npy", "w+", np.int64, (n,)),
            "nll": np.lib.format.open_memmap(tmp / "nll.npy", "w+", np.float64, (n,)),
        }
        at = 0
        for part in rows:
            q, scale = _quantise(part)
            k = slice(at, at + q.shape[0])
            arrays["logp"][k], arrays["scale"][k], arrays["top"][k], arrays["nll"][k] = q, scale, part.top, part.nll
            at += q.shape[0]
            yield _rounded(q, scale, part.top, part.nll)
        for a in arrays.values():
            a.flush()
        del arrays
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "tokens": n, "vocab": vocab, **meta}))
        swap_into_place(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _forget_old(folder.parent)


def _room(folder: Path, size: int) -> bool:
    """Whether SIZE bytes of rows are kept: not over MOST_BYTES, and the disk has room (else said on stderr)."""
    if size > MOST_BYTES:
        print(f"note: the reference's rows would take {size / 1e9:.1f} GB: computed, not kept", file=sys.stderr)
        return False
    try:
        free_space_check(folder.parent, 2 * size, "keeping the reference's rows")
    except ClidepError as exc:  # a full disk costs the cache, never the figure
        print(f"note: {exc}: computed, not kept", file=sys.stderr)
        return False
    return True


def _forget_old(root: Path) -> None:
    """Remove all but the KEEP most recently used folders of kept rows (only those whose name is a key)."""
    kept = [p for p in root.iterdir() if p.is_dir() and len(p.name) == 24 and set(p.name) <= set("0123456789abcdef")]
    for old in sorted(kept, key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
