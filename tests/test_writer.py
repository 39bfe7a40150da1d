"""The report writer: one field list, a printer per format, failed rows, nested keys."""

from __future__ import annotations

import csv
import io
import json

from clidep.bench.writer import Column, csv_text, jsonl, markdown

FIELDS = [
    Column("name", "model"),
    Column("precision", "precision"),
    Column("prefill_ms.32", "prefill 32 ms", ".1f"),
    Column("fits", "fits"),
    Column("speedup", "vs base", text=lambda r: f"{r['speedup']:.2f}x"),
]
ROWS = [
    {
        "name": "cli",
        "precision": "int8",
        "prefill_ms": {"32": 12.345},
        "fits": True,
        "speedup": 2.0,
        "provenance": {"git_sha": "abc"},
    },
    {"name": "teacher", "precision": "fp32", "error": "prompt too long", "provenance": {"git_sha": "abc"}},
]


def test_markdown_formats_cells_and_reports_failures_in_place():
    lines = markdown(FIELDS, ROWS, "**title**").splitlines()
    assert lines[0] == "**title**" and lines[2] == "| model | precision | prefill 32 ms | fits | vs base |"
    assert lines[4] == "| cli | int8 | 12.3 | yes | 2.00x |"
    assert lines[5] == "| teacher | fp32 | failed: prompt too long | | |"
    assert all(line.count("|") == lines[2].count("|") for line in lines[2:])  # every row as wide as the header


def test_csv_keeps_raw_values_and_the_provenance_columns():
    rows = list(csv.DictReader(io.StringIO(csv_text(FIELDS, ROWS, ("error", "provenance.git_sha")))))
    assert list(rows[0]) == ["name", "precision", "prefill_ms_32", "fits", "speedup", "error", "git_sha"]
    assert rows[0]["prefill_ms_32"] == "12.345" and rows[0]["git_sha"] == "abc" and rows[0]["error"] == ""
    assert rows[1]["error"] == "prompt too long" and rows[1]["prefill_ms_32"] == ""


def test_jsonl_is_one_whole_record_per_line():
    assert [json.loads(line) for line in jsonl(ROWS).splitlines()] == ROWS


def test_a_name_with_a_newline_or_a_pipe_stays_one_row():
    """A path may hold a newline (and a name a pipe): each record is still exactly one table row."""
    rows = [{"name": "runs/a\nb|c", "precision": "fp32"}, {"name": "x", "precision": "int8", "error": "bad\nfile"}]
    md = markdown(FIELDS[:2], rows).splitlines()
    assert len(md) == 2 + len(rows)
    assert md[2] == "| runs/a\\nb\\|c | fp32 |" and md[3] == "| x | int8 | failed: bad\\nfile |"
