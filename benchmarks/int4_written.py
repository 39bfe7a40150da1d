"""The int4 file with some linear layers kept at 8 bits (export --int4-8bit-layers), written and measured as users
get it: what it keeps of a trained student's quality, and what it costs at GPT-2-medium shapes.

benchmarks/int4_layers.py found, by reading the weights back, that the QKV projection at 8 bits halves a grid
student's int4 cost for 9% more weights. This measures the files themselves:

* quality (the default): ``clidep export MODEL --int4 --int4-8bit-layers L`` for each layout L of --layouts, on
  the reference teacher and each trained student of --students, each file scored by export itself (its int8 KV
  cache included; perplexity on export's check text, 8,192 tokens of WikiText-test, against the same export's
  fp32 graph; KL divergence and next-token agreement on its windows), as the manifest records them;
* speed (--speed): the original GPT-2-medium shape and grid's candidate shapes at --ratio (random weights,
  benchmarks/grid_race.py's models), each exported once per layout, every int4 file measured by ``clidep bench``
  in the same run: decode ms/token after 32 and 952 tokens, prefill of 128.

    python -m clidep compress ../shared/models/ref-gpt2-12l --out runs/grid-s0 --ratio 2.47 --tokens 500000 \\
        --precision int4 --seed 0          # and seeds 1, 2; --ratio 4 into runs/grid4-s0..2
    python benchmarks/int4_written.py --students runs/grid-s0,runs/grid-s1,runs/grid-s2,runs/grid4-s0,runs/grid4-s1,runs/grid4-s2
    python benchmarks/int4_written.py --speed            # ~15 min on 2 cores
    python benchmarks/int4_written.py --students '' --out /tmp/iw     # smoke: the teacher alone (~1 min)

Writes OUT/int4_written.{json,md,csv,jsonl} (quality) or OUT/int4_written_speed.* (OUT: benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gpt2_shapes

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--students", default="", help="comma-separated compress outputs")
    ap.add_argument("--layouts", default="none;attn_qkv", help="--int4-8bit-layers values, ';'-separated")
    ap.add_argument("--speed", action="store_true", help="decode speed at GPT-2-medium shapes instead")
    gpt2_shapes.add_arguments(ap)
    ap.add_argument("--ratio", type=float, default=2.47)
    ap.add_argument("--depth", default="32,952")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    layouts = [x for x in a.layouts.split(";") if x]
    (speed if a.speed else quality)(a, layouts)


def quality(a, layouts: list[str]) -> None:
    from clidep.bench.provenance import provenance

    rows = []
    for path in [a.teacher, *(s for s in a.students.split(",") if s)]:
        for layout in layouts:
            with tempfile.TemporaryDirectory() as tmp:
                manifest = _export(path, Path(tmp) / "onnx", layout)
            fp32, int4 = (
                next(v for v in manifest["variants"] if v["precision"].startswith(p)) for p in ("fp32", "int4")
            )
            rows.append(
                {
                    "model": "teacher" if path == a.teacher else Path(path).name,
                    "shape": gpt2_shapes.shape_label(Path(path)),
                    "layout": layout,
                    "mb": int4["size_bytes"] / 1e6,
                    "fp32": fp32["ppl"],
                    "ppl": int4["ppl"],
                    "delta": int4["ppl"] / fp32["ppl"] - 1,
                    "kld": int4["kld_mean"],
                    "agreement": int4["greedy_agreement"],
                    "int4": {k: v for k, v in int4.items() if k != "graph_kv_shapes"},
                }
            )
            print(writer.markdown(FIELDS, rows[-1:]).splitlines()[-1], flush=True)
    result = {**provenance(), "protocol": manifest["ppl_protocol"], "layouts": layouts, "rows": rows}
    writer.write(Path(a.out), "int4_written", FIELDS, rows, result, title=title(result))
    print(writer.markdown(FIELDS, rows, title(result)), end="")


def _export(model: str, out: Path, layout: str) -> dict:
    """``clidep export MODEL --int4 --int4-8bit-layers LAYOUT`` as a user runs it; its manifest."""
    cmd = [sys.executable, "-m", "clidep", "export", model, "--out", str(out), "--int4", "--no-genai"]
    subprocess.run([*cmd, "--int4-8bit-layers", layout], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "manifest.json").read_text())


def speed(a, layouts: list[str]) -> None:
    from grid_race import _models, race_result

    from clidep.commands.bench import bench
    from clidep.commands.export import export_artifact
    from clidep.hardware import devices

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        shapes, files = _models(a, Path(tmp), log), {}
        for s in shapes:
            for layout in layouts:
                out = Path(tmp) / f"{s['name']}-{layout.replace(',', '+')}"
                log(f"clidep export {s['label']} --int4 --int4-8bit-layers {layout} ...")
                export_artifact(
                    str(Path(tmp) / s["name"]), out, int4=True, int4_8bit_layers=layout, genai=False,
                    allow_gate_miss=True, ppl_tokens=512, log=log,
                )  # fmt: skip
                files[out.name] = (s, layout)
        report = bench(
            [str(Path(tmp) / name / "model.int4.onnx") for name in files], devices.load("host"), runtime="clidep",
            prompt_lens="128", gen=64, threads=str(a.threads), depth=a.depth, reps=a.reps, log=log,
        )  # fmt: skip
    depths = a.depth.split(",")
    rows = []
    for r in report["models"]:
        s, layout = files[r["name"]]
        first, last = (r["decode_ms_at"][d] for d in (depths[0], depths[-1]))
        rows.append(
            {
                "label": s["label"],
                "params": s["params"],
                "layout": layout,
                "size_bytes": r["size_bytes"],
                "decode_first": first,
                "decode_last": last,
                "prefill_128": r["prefill_ms"]["128"],
                "record": r,
            }
        )
    for r in rows:  # against the same shape's all-4-bit file, measured in the same run
        base = next(b for b in rows if b["label"] == r["label"] and b["layout"] == layouts[0])
        r["cost_first"], r["cost_last"] = (
            r["decode_first"] / base["decode_first"],
            r["decode_last"] / base["decode_last"],
        )
    result = race_result(a, report, start, rows)
    writer.write(Path(a.out), "int4_written_speed", SPEED_FIELDS, rows, result, title=speed_title(result))
    print(writer.markdown(SPEED_FIELDS, rows, speed_title(result)), end="")


def title(result: dict) -> str:
    p = result["protocol"]
    return (
        f"int4 files written by clidep export with the linear layers --int4-8bit-layers names at 8 bits, scored by "
        f"export itself (int8 KV cache; perplexity on {p.get('tokens', 0):,} tokens of {p.get('data', '?')} against "
        f"the same export's fp32 graph), on {result['host']} at git {result['git_sha']}"
    )


def speed_title(result: dict) -> str:
    p, s = result["provenance"], result["shapes"]
    return (
        f"int4 files with and without 8-bit layers at GPT-2-medium shapes ({s['layers']} x {s['width']} and grid's "
        f"candidates at ratio {result['ratio']}, random weights), clidep bench on {p['threads']} threads, "
        f"{p['reps']} repetitions (ms per decoded token, medians), on {p['host']}, {result['cpu']} with "
        f"{result['l3_cache']} of L3 cache, read bandwidth {result['read_gbs']:.1f} GB/s, at git {p['git_sha']}"
    )


FIELDS = [
    writer.Column("model", "model"),
    writer.Column("shape", "shape"),
    writer.Column("layout", "--int4-8bit-layers"),
    writer.Column("mb", "int4 MB", ".2f"),
    writer.Column("fp32", "fp32 ppl", ".2f"),
    writer.Column("ppl", "int4 ppl", ".2f"),
    writer.Column("delta", "Δ", "+.2%"),
    writer.Column("kld", "KLD", ".4f"),
    writer.Column("agreement", "next token", ".1%"),
]

SPEED_FIELDS = [
    writer.Column("label", "model"),
    writer.Column("params", "params", text=lambda r: f"{r['params'] / 1e6:.1f} M"),
    writer.Column("layout", "--int4-8bit-layers"),
    writer.Column("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.0f}"),
    writer.Column("decode_first", "decode ms @32", ".2f"),
    writer.Column("decode_last", "decode ms @952", ".2f"),
    writer.Column("cost_first", "vs all 4-bit @32", text=lambda r: f"{r['cost_first']:.2f}x"),
    writer.Column("cost_last", "vs all 4-bit @952", text=lambda r: f"{r['cost_last']:.2f}x"),
    writer.Column("prefill_128", "prefill 128 ms", ".0f"),
]


if __name__ == "__main__":
    main()
