"""Why grid's students slow with the context: ONNX Runtime's profiler over their int4 files' decode steps.

The target for the default student's int4 decode is to slow at most 1.25x from 32 to 952 tokens; grid_race.py measured
1.29-2.25x for grid's four candidate shapes at 2.47x of GPT-2 medium, where the bytes a token reads (weights
and the int8 KV cache) allow 1.16-1.32x. This profiles each candidate's int4 file, as ``clidep export --int4``
writes it (random weights, grid_race.py's models), after --pasts tokens: node time per op type per decode step
(benchmarks/profile_decode.py's profiler), so the op that grows with the context is named and timed.

    python benchmarks/profile_context.py                 # ~10 min on 2 cores
    python benchmarks/profile_context.py --layers 4 --width 256 --heads 4 --positions 256 --pasts 32,128 --out /tmp/pc   # smoke

Writes OUT/profile_context.{json,md,csv,jsonl} (OUT: benchmarks/results).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import gpt2_shapes

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]
#: The op types a row names; the rest of the node time is summed as "other".
OPS = ("GroupQueryAttention", "MatMulNBits")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpt2_shapes.add_arguments(ap)
    ap.add_argument("--ratio", type=float, default=2.47)
    ap.add_argument("--pasts", default="32,952", help="tokens in the cache before the profiled steps")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    import onnxruntime
    from grid_race import _models
    from profile_decode import _profile

    from clidep.bench.provenance import provenance
    from clidep.commands.export import export_artifact

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in _models(a, Path(tmp), log):
            out = Path(tmp) / f"{s['name']}-onnx"
            export_artifact(Path(tmp) / s["name"], out, int4=True, genai=False, allow_gate_miss=True, ppl_tokens=512)
            for past in (int(p) for p in a.pasts.split(",")):
                at = argparse.Namespace(**vars(a), past=past)  # _profile reads the context as .past
                ops, total, step_ms = _profile(out / "model.int4.onnx", at, Path(tmp))
                per_step = {op: ops.get(op, 0) / 1e3 / a.steps for op in OPS}
                rows.append(
                    {
                        "label": s["label"],
                        "params": s["params"],
                        "past": past,
                        "attention_ms": per_step["GroupQueryAttention"],
                        "matmul_ms": per_step["MatMulNBits"],
                        "other_ms": total / 1e3 / a.steps - sum(per_step.values()),
                        "step_ms": step_ms,
                        "attention_share": ops.get("GroupQueryAttention", 0) / total,
                    }
                )
                log(writer.markdown(FIELDS, rows[-1:]).splitlines()[-1])
    result = {
        **provenance(),
        "onnxruntime": onnxruntime.__version__,
        "shapes": vars(a),
        "rows": rows,
    }
    writer.write(Path(a.out), "profile_context", FIELDS, rows, result, title=title(result))
    print(writer.markdown(FIELDS, rows, title(result)), end="")


def title(result: dict) -> str:
    a = result["shapes"]
    return (
        f"Decode of each int4 file (`clidep export --int4`, int8 KV cache) after each context, ONNX Runtime "
        f"{result['onnxruntime']}'s profiler: the original {a['layers']} x {a['width']} (vocabulary {a['vocab']:,}, "
        f"random weights) and grid's candidate shapes at {a['ratio']:g}x, {a['steps']} profiled steps, "
        f"{a['threads']} threads, on {result['host']} at git {result['git_sha']}; node ms per step by op type "
        f"(the profiler's own overhead is in the wall time, not the node time)"
    )


FIELDS = [
    writer.Column("label", "model"),
    writer.Column("past", "context", ","),
    writer.Column("attention_ms", "GroupQueryAttention ms", ".2f"),
    writer.Column("matmul_ms", "MatMulNBits ms", ".2f"),
    writer.Column("other_ms", "other ops ms", ".2f"),
    writer.Column("attention_share", "attention share", ".0%"),
    writer.Column("step_ms", "wall ms / step", ".2f"),
]


if __name__ == "__main__":
    main()
