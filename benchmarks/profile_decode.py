"""Where decode spends its time: ONNX Runtime's profiler over decode steps, node time summed per op type.

GPT-2-medium shapes with random weights, a prompt of --past tokens, then --steps profiled decode
steps, for the traced graph (fp32, and the dynamic int8 `--int8` wrote before) and the ONNX Runtime
graph (fp32, 8-bit, 4-bit as `clidep export` writes them). One process, --threads threads.

    python benchmarks/profile_decode.py                     # ~4 min on 2 cores
    python benchmarks/profile_decode.py --layers 4 --width 256 --heads 4 --out /tmp/pd   # smoke

Writes OUT/profile_decode.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import gpt2_shapes
import numpy as np

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpt2_shapes.add_arguments(ap)
    ap.add_argument("--past", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.bench.provenance import provenance
    from clidep.export import traced_quantize
    from clidep.export.config import ExportConfig
    from clidep.export.ort_graph import export_ort_graph
    from clidep.export.traced_graph import export_onnx
    from clidep.hardware.kernels import INT8_BLOCK

    model = gpt2_shapes.random_model(a)
    prov = {k: v for k, v in provenance().items() if k in ("host", "time", "git_sha")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        traced = export_onnx(model, t / "traced.onnx")
        graphs = [
            ("traced", "fp32", traced),
            ("traced", "int8 dynamic (before)", traced_quantize.int8_dynamic(traced, t / "t8.onnx")),
        ]
        graphs += [
            ("ONNX Runtime", "fp32", export_ort_graph(model, t / "f32.onnx")),
            ("ONNX Runtime", "8-bit", export_ort_graph(model, t / "f8.onnx", 8, INT8_BLOCK)),
            ("ONNX Runtime", "4-bit", export_ort_graph(model, t / "f4.onnx", 4, ExportConfig().block_size)),
        ]
        for graph, weights, path in graphs:
            ops, total, per_step = _profile(path, a, t)
            for op, us in sorted(ops.items(), key=lambda kv: -kv[1])[:6]:
                rows.append(
                    {
                        "graph": graph,
                        "weights": weights,
                        "op": op,
                        "share": us / total,
                        "ms_per_step": us / 1e3 / a.steps,
                        "step_ms": per_step,
                        "provenance": prov,
                    }
                )
            print(writer.markdown(FIELDS, rows[-6:]), flush=True)
    import onnxruntime

    result = {**provenance(), "onnxruntime": onnxruntime.__version__, "shapes": vars(a), "rows": rows}
    writer.write(Path(a.out), "profile_decode", FIELDS, rows, result, title=title(result))
    print(writer.markdown(FIELDS, rows, title(result)), end="")


def title(result: dict) -> str:
    a = result["shapes"]
    return (
        f"Decode profile, ONNX Runtime {result['onnxruntime']}: {a['layers']} x {a['width']}, vocabulary "
        f"{a['vocab']:,}, {a['steps']} steps after {a['past']} tokens, {a['threads']} threads; the six op types "
        f"with the most node time per graph"
    )


def _profile(path: Path, a, tmp: Path) -> tuple[dict, float, float]:
    """(node µs per op type, total node µs, wall ms per step) over a.steps profiled decode steps."""
    import time

    import onnxruntime as ort

    from clidep.runtime.runner import OnnxCausalLM

    runner = OnnxCausalLM(path, threads=a.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = a.threads, 3
    options.enable_profiling, options.profile_file_prefix = True, str(tmp / path.stem)
    runner.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, a.vocab, (1, a.past))
    mask, pos = np.ones_like(ids), np.arange(a.past)[None]
    logits, past = runner.forward(ids, mask, pos, runner.empty_past(1, a.past + a.steps + 1), last_only=True)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        logits, mask, pos, past = runner.decode_step(logits[:, -1].argmax(-1)[:, None], mask, pos, past)
    step_ms = (time.perf_counter() - t0) * 1e3 / a.steps
    events = json.loads(Path(runner.session.end_profiling()).read_text())
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )
    cut = runs[0]["ts"] + runs[0]["dur"]  # the first run is the prefill: left out
    ops = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > cut:
            ops[e["args"]["op_name"]] += e["dur"]
    return ops, sum(ops.values()), step_ms


FIELDS = [
    writer.Column("graph", "graph"),
    writer.Column("weights", "weights"),
    writer.Column("op", "op type"),
    writer.Column("share", "share of node time", ".1%"),
    writer.Column("ms_per_step", "ms / step", ".2f"),
    writer.Column("step_ms", "wall ms / step", ".1f"),
]


if __name__ == "__main__":
    main()
