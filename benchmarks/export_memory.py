"""What `clidep export --int8 --int4` costs at GPT-2-medium shapes: peak resident memory against the fp32
graph, and wall time, phase by phase.

The CLI student of GPT-2 medium at --ratio (random weights, as benchmarks/runtime.py builds it) is
exported by the command line in a child process; its resident memory is sampled every 50 ms from
/proc and the peak checked against getrusage's; each progress line the export prints is timed, so
the table says which phase holds the peak and which takes the time.

    python benchmarks/export_memory.py                      # ~6 min on 2 cores
    python benchmarks/export_memory.py --layers 4 --width 256 --heads 4 --positions 256 --out /tmp/em   # smoke

Writes OUT/export_memory.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import gpt2_shapes

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpt2_shapes.add_arguments(ap)
    ap.add_argument("--ratio", type=float, default=2.47)
    ap.add_argument("--flags", default="--int8 --int4", help="export flags besides --out")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    import runtime

    from clidep.bench.provenance import provenance

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runtime._models(a, work, lambda m: None)
        cmd = [
            sys.executable,
            "-m",
            "clidep",
            "export",
            str(work / "cli"),
            "--out",
            str(work / "onnx"),
            *a.flags.split(),
        ]
        phases, samples, peak_rusage, wall = _run(cmd)
        fp32 = (work / "onnx" / "model.onnx").stat().st_size
        fp32 += (
            (work / "onnx" / "model.onnx.data").stat().st_size if (work / "onnx" / "model.onnx.data").exists() else 0
        )
    peak = max(rss for _, rss in samples)
    rows = []
    for i, (t, line) in enumerate(phases):
        end = phases[i + 1][0] if i + 1 < len(phases) else wall
        during = [rss for s, rss in samples if t <= s <= end] or [0]
        rows.append(
            {
                "phase": line,
                "start_s": t,
                "seconds": end - t,
                "peak_rss_mb": max(during) / 1e6,
                "vs_fp32_graph": max(during) / fp32,
            }
        )
    result = {
        **provenance(),
        "command": " ".join(["clidep", *cmd[3:4], "STUDENT", *cmd[5:6], "OUT", *cmd[7:]]),
        "shapes": {"layers": a.layers, "width": a.width, "heads": a.heads, "vocab": a.vocab},
        "ratio": a.ratio,
        "fp32_graph_bytes": fp32,
        "peak_rss_bytes": peak,
        "peak_rss_rusage_bytes": peak_rusage,
        "peak_vs_fp32_graph": peak / fp32,
        "wall_s": wall,
        "rss_samples": samples,
        "rows": rows,
    }
    heading = (
        f"clidep export {a.flags} of the CLI student at {a.ratio}x of {a.layers} x {a.width} (vocabulary "
        f"{a.vocab:,}), random weights, on {result['host']} at git {result['git_sha']}: fp32 graph "
        f"{fp32 / 1e6:.0f} MB, peak RSS {peak / 1e6:.0f} MB ({peak / fp32:.1f}x), {wall:.0f} s in all"
    )
    writer.write(Path(a.out), "export_memory", FIELDS, rows, result, title=heading)
    print(writer.markdown(FIELDS, rows, heading), end="")


def _run(cmd: list[str]) -> tuple[list, list, int, float]:
    """Run CMD: its progress lines [(s, line)], RSS samples [(s, bytes)], getrusage's peak and the wall time."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    samples, phases = [], [(0.0, "start: python, torch, transformers")]

    def sample():
        while proc.poll() is None:
            try:
                kb = next(int(line.split()[1]) for line in open(f"/proc/{proc.pid}/status") if line.startswith("VmRSS"))
                samples.append((time.perf_counter() - t0, kb * 1024))
            except (OSError, StopIteration):
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stderr:
        if line.strip() and "Loading weights" not in line and "warn" not in line.lower():
            phases.append((time.perf_counter() - t0, line.strip()))
            print(f"{phases[-1][0]:7.1f} s  {line.strip()}", file=sys.stderr, flush=True)
    if proc.wait():
        raise SystemExit(f"export failed: {phases[-1][1]}")
    sampler.join()
    wall = time.perf_counter() - t0
    return phases, samples, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, wall


FIELDS = [
    writer.Column("phase", "phase (the export's progress line)"),
    writer.Column("start_s", "at s", ".1f"),
    writer.Column("seconds", "seconds", ".1f"),
    writer.Column("peak_rss_mb", "peak RSS MB", ".0f"),
    writer.Column("vs_fp32_graph", "x fp32 graph", ".2f"),
]


if __name__ == "__main__":
    main()
