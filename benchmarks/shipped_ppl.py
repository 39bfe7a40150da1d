"""The files users ship, scored on the published ablation's protocol against the teacher's fp32 perplexity.

export scores each file it writes on 8,192 WikiText-test tokens (context 512) against its own fp32 graph; the
ablation (paper_ablation.py, shipped_student.py) scores students on the whole WikiText-test text with context 256
and stride 128 (331,072 tokens; the teacher 195.35 in torch), and clidep's targets for the shipped file are set
on that protocol: within +2% of its own fp32, and within 1.05x (ratio 2.47) or 1.10x (ratio 4) of the teacher's
fp32. This writes each model's files as a user does (``clidep export MODEL --int4 --gguf --gguf-types f16,q4_0``:
export's defaults otherwise, so the int4 file keeps the QKV projection at 8 bits) and scores every file in its own
runtime with ``clidep eval FILE --context 256 --stride 128`` over the whole text: the fp32 graph and the int4
file in ONNX Runtime, the Q4_0 GGUF in llama.cpp. The teacher's fp32 graph, scored in the same run, is the
reference every ratio is taken to; the F16 GGUF file is only weighed (the target: the Q4 file at most 0.45x of it).

    python benchmarks/shipped_ppl.py --students runs/grid-s0,runs/grid-s1,runs/grid-s2,runs/grid4-s0,runs/grid4-s1,runs/grid4-s2
    python benchmarks/shipped_ppl.py --eval-tokens 8192 --out /tmp/sp      # smoke: the teacher alone (~1 min)

The students are compress outputs (int4_written.py's docstring has the commands that train them). ~2 minutes a
file on 2 cores. Writes OUT/shipped_ppl.{json,md,csv,jsonl} (OUT: benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import gpt2_shapes

from clidep.bench import writer
from clidep.bench.writer import Column

ROOT = Path(__file__).resolve().parents[1]
#: (row label, file in the export folder, runtime)
FILES = (
    ("fp32", "model.onnx", "onnx"),
    ("int4", "model.int4.onnx", "onnx"),
    ("q4_0", "gguf/model.q4_0.gguf", "llamacpp"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--students", default="", help="comma-separated compress outputs")
    ap.add_argument("--eval-tokens", type=int, default=0, help="score only the first N tokens (0: the whole text)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.bench.provenance import provenance
    from clidep.commands.eval import evaluate

    prov, t0, rows = provenance(), time.perf_counter(), []
    protocol = {"data": "wikitext-test", "context": 256, "stride": 128, "eval_tokens": a.eval_tokens}
    with tempfile.TemporaryDirectory() as tmp:
        for path in [a.teacher, *(s for s in a.students.split(",") if s)]:
            name = "teacher" if path == a.teacher else Path(path).name
            manifest = export_files(path, Path(tmp) / name, "f16,q4_0")
            for label, file, runtime in FILES:
                res = evaluate(
                    Path(tmp) / name / file, data="wikitext-test", context=256, stride=128, batch_size=8,
                    max_tokens=a.eval_tokens or None,
                )  # fmt: skip
                rows.append(
                    {
                        "model": name,
                        "shape": gpt2_shapes.shape_label(Path(path)),
                        "file": label,
                        "runtime": runtime,
                        "ppl": res.ppl,
                        "tokens": res.tokens,
                        "mb": (Path(tmp) / name / file).stat().st_size / 1e6,
                        "f16_mb": (Path(tmp) / name / "gguf" / "model.f16.gguf").stat().st_size / 1e6,
                        "variant": variant(manifest, file),
                        "provenance": prov,
                    }
                )
                print(f"{name} {label}: ppl {res.ppl:.2f} on {res.tokens:,} tokens", file=sys.stderr, flush=True)
    _relate(rows)
    record = {**prov, "protocol": protocol, "rows": rows, "wall_seconds": round(time.perf_counter() - t0, 1)}
    writer.write(Path(a.out), "shipped_ppl", FIELDS, rows, record, title=title(record))
    print(writer.markdown(FIELDS, rows, title(record)), end="")


def export_files(model: str, out: Path, gguf_types: str | None) -> dict:
    """``clidep export MODEL --int4 --gguf --gguf-types GGUF_TYPES`` (no GGUF where GGUF_TYPES is None: a model that
    is not a stock GPT-2) with export's other defaults; its manifest. A file that misses its gate is still written
    (--allow-gate-miss) so that it is measured, and the manifest says so."""
    from clidep.commands.export import export_artifact

    gguf = dict(gguf=True, gguf_types=gguf_types) if gguf_types else {}
    export_artifact(model, out, int4=True, genai=False, allow_gate_miss=True, **gguf)
    return json.loads((out / "manifest.json").read_text())


def variant(manifest: dict, file: str) -> dict:
    """The manifest's entry for FILE (int4: its layout; GGUF: its tensor types), without the KV shape lists."""
    entries = [*manifest["variants"], *manifest.get("gguf", {}).get("files", [])]
    found = next((v for v in entries if Path(v.get("file", "")).name == Path(file).name), {})
    return {k: v for k, v in found.items() if k != "graph_kv_shapes"}


def _relate(rows: list[dict]) -> None:
    """Each row's perplexity against its own model's fp32 graph and against the teacher's fp32 graph."""
    fp32 = {r["model"]: r["ppl"] for r in rows if r["file"] == "fp32"}
    for r in rows:
        r["delta_own_fp32"] = r["ppl"] / fp32[r["model"]] - 1
        r["x_teacher_fp32"] = r["ppl"] / fp32["teacher"]


def title(record: dict) -> str:
    p, rows = record["protocol"], record["rows"]
    kinds = next(r["variant"].get("linear_layers_at_8_bits") for r in rows if r["file"] == "int4")
    return (
        f"The files `clidep export MODEL --int4 --gguf --gguf-types f16,q4_0` writes (export's defaults otherwise: the "
        f"int4 file keeps {', '.join(kinds or ()) or 'no linear layer'} at 8 bits), each scored in its own runtime by `clidep eval FILE "
        f"--context {p['context']} --stride {p['stride']}` on {rows[0]['tokens']:,} WikiText-test tokens (the "
        f"published ablation's protocol); Δ against the model's own fp32 ONNX graph (the GGUF row's too: llama.cpp "
        f"runs the same weights), ratios to the teacher's fp32 graph, both scored in the same run. "
        f"{record['host']}, git {record['git_sha']}."
    )


FIELDS = [
    Column("model", "model"),
    Column("shape", "shape"),
    Column("file", "file"),
    Column("runtime", "runtime"),
    Column("ppl", "ppl", text=lambda r: f"{r['ppl']:.2f}"),
    Column("delta_own_fp32", "Δ own fp32", text=lambda r: f"{r['delta_own_fp32']:+.2%}"),
    Column("x_teacher_fp32", "x teacher fp32", text=lambda r: f"{r['x_teacher_fp32']:.3f}"),
    Column("mb", "MB", text=lambda r: f"{r['mb']:.2f}"),
    Column("f16_mb", "MB / F16 GGUF MB", text=lambda r: f"{r['mb'] / r['f16_mb']:.2f}" if r["file"] == "q4_0" else ""),
    Column("tokens", "tokens", table=False),
    Column("provenance.host", "machine", table=False),
]


if __name__ == "__main__":
    main()
