"""One report writer: one field list per record, a printer per format (Markdown, CSV, JSON, JSONL).

As llama-bench does it: every row is a record (a dict) carrying its own provenance; a ``Column``
names where a value lives in the record (dotted keys reach nested dicts), its Markdown header
and format; the CSV and JSONL printers write the raw values, so nothing is rounded away. A
record with an ``error`` prints as a failed row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Column:
    key: str  # where the value lives: "decode_ms_p50", "prefill_ms.32", "provenance.git_sha"
    header: str  # the Markdown column
    fmt: str = ""  # format spec for Markdown ("", ".2f", ".0%", ",")
    text: Callable[[dict], str] | None = None  # a Markdown cell composed from the whole record
    table: bool = True  # False: a CSV column only (a value another Markdown cell already shows)


def value(record: dict, key: str):
    """The value at a dotted KEY of RECORD (None where any part is missing)."""
    for part in key.split("."):
        if not isinstance(record, dict) or part not in record:
            return None
        record = record[part]
    return record


def _one_line(text: str) -> str:
    """A table cell's text: a newline (a path may hold one) shown as \\n, a pipe escaped, so one record stays one row."""
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n").replace("|", "\\|")


def _cell(record: dict, f: Column) -> str:
    return _one_line(_raw_cell(record, f))


def _raw_cell(record: dict, f: Column) -> str:
    if f.text is not None:
        return f.text(record)
    v = value(record, f.key)
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return format(v, f.fmt) if f.fmt else str(v)


def markdown(fields: list[Column], records: list[dict], title: str = "", keep: int = 2) -> str:
    """A Markdown table (TITLE above it); a record with an ``error`` keeps its first KEEP cells (what
    names it) and says why in the next."""
    fields = [f for f in fields if f.table]
    lines = [title, ""] if title else []
    lines += ["| " + " | ".join(f.header for f in fields) + " |", "|" + "---|" * len(fields)]
    for r in records:
        if r.get("error"):
            lines.append(
                "| "
                + " | ".join(_cell(r, f) for f in fields[:keep])
                + f" | failed: {_one_line(str(r['error']))} |"
                + " |" * (len(fields) - keep - 1)
            )
        else:
            lines.append("| " + " | ".join(_cell(r, f) for f in fields) + " |")
    return "\n".join(lines) + "\n"


def csv_text(fields: list[Column], records: list[dict], extra: tuple[str, ...] = ("error",)) -> str:
    """One row per record: the fields' raw values, then EXTRA keys (the error, the provenance).

    Columns are named by key, dots as underscores, ``provenance.`` dropped (``prefill_ms_32``, ``git_sha``).
    """
    buf = io.StringIO()
    w = csv.writer(buf)
    keys = [f.key for f in fields] + list(extra)
    w.writerow([k.removeprefix("provenance.").replace(".", "_") for k in keys])
    for r in records:
        w.writerow([value(r, k) for k in keys])
    return buf.getvalue()


def jsonl(records: list[dict]) -> str:
    """One JSON object per line, each record whole (its provenance included)."""
    return "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)


def write(
    out: Path,
    stem: str,
    fields: list[Column],
    records: list[dict],
    document: dict,
    title: str = "",
    csv_extra: tuple[str, ...] = ("error",),
    keep: int = 2,
) -> list[Path]:
    """STEM.json (DOCUMENT), STEM.md, STEM.csv and STEM.jsonl in OUT, each written atomically."""
    from clidep.files import atomic_write, write_json

    out = Path(out)
    return [
        write_json(out / f"{stem}.json", document),
        atomic_write(out / f"{stem}.md", lambda t: t.write_text(markdown(fields, records, title, keep))),
        atomic_write(out / f"{stem}.csv", lambda t: t.write_text(csv_text(fields, records, csv_extra))),
        atomic_write(out / f"{stem}.jsonl", lambda t: t.write_text(jsonl(records))),
    ]
