"""ExecuTorch beside clidep's ONNX Runtime runner and llama.cpp: the reference teacher and the default student
(compress --method grid, ratio 2.47) in every runtime, one `clidep bench` run.

Each model is exported as a user would (`clidep export --int4 --gguf --gguf-types q4_0 --executorch
--et-quant 8da8w,8da4w`: every file checked in its own runtime) and every file is benched in the same run on
this machine, each in its own process: size, decode ms per token after 32 and 440 tokens (the models have 512
positions; 440 + 8 warm-up + 64 timed tokens fit), prefill, peak memory, and perplexity on the first 8,192
WikiText-test tokens (context 512, stride 256) through the runtime itself. The student is compressed here
(seed 0, 500,000 tokens) unless --student names one.

    python benchmarks/pte_runtimes.py                       # ~35 min on 2 cores (compress ~9, exports ~15, bench ~10)
    python benchmarks/pte_runtimes.py --student runs/student --reps 1 --out /tmp/et   # an existing student

Named pte_*, not executorch*: a script named executorch.py would shadow the executorch package on sys.path.

Writes OUT/pte_runtimes.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--student", default=None, help="an existing student folder (default: compress one here)")
    ap.add_argument("--tokens", type=int, default=500_000, help="distillation tokens of the student compressed here")
    ap.add_argument("--work", default=None, help="folder for the student and the exports (default: a temporary one)")
    ap.add_argument("--depth", default="32,440")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.bench.provenance import provenance
    from clidep.commands.bench import bench
    from clidep.commands.compress import compress
    from clidep.commands.export import export_artifact
    from clidep.hardware import devices

    start = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = a.work or scratch
        student = a.student
        if student is None:
            student = str(Path(tmp) / "grid")
            if not (Path(student) / "compress.json").exists():  # a --work folder's finished student is reused
                compress(a.teacher, student, ratio=2.47, tokens=a.tokens, seed=0, log=print)
        exports = []
        for name, model in (("teacher", a.teacher), ("grid-student", student)):
            out = Path(tmp) / name
            export_artifact(
                model,
                out,
                overwrite=True,
                int4=True,
                gguf=True,
                gguf_types=("q4_0",),
                executorch=True,
                et_quant=("8da8w", "8da4w"),
                log=print,
            )
            exports.append(str(out))
        result = bench(
            exports,
            devices.load("host"),
            prompt_lens="128",
            depth=a.depth,
            gen=64,
            reps=a.reps,
            threads=a.threads,
            runtime="clidep,llamacpp,executorch",
            ppl=True,
            ppl_tokens=8192,
            log=print,
        )
    rows = [r for r in result["models"] if "error" not in r]
    first, last = a.depth.split(",")[0], a.depth.split(",")[-1]
    for r in rows:
        r["decode_first"], r["decode_last"] = r["decode_ms_at"][first], r["decode_ms_at"][last]
        r["slowdown"] = r["decode_last"] / r["decode_first"]
    record = {
        **provenance(),
        "teacher": a.teacher,
        "student": a.student or f"compress --method grid --ratio 2.47 --tokens {a.tokens} --seed 0",
        "wall_seconds": round(time.time() - start),
        "rows": rows,
        "errors": [r for r in result["models"] if "error" in r],
    }
    heading = title(record)
    writer.write(Path(a.out), "pte_runtimes", FIELDS, rows, record, title=heading)
    print(writer.markdown(FIELDS, rows, heading), end="")


def title(result: dict) -> str:
    """The table's heading, from the run's record (threads and repetitions as its rows ran them)."""
    row = result["rows"][0]
    return (
        f"The reference teacher and the grid student (ratio 2.47) in ONNX Runtime (clidep's runner), llama.cpp and "
        f"ExecuTorch (XNNPACK): one `clidep bench` run, {row['threads']} threads, {row['reps']} repetitions, on "
        f"{result['host']} at git {result['git_sha']}; ppl through each runtime on 8,192 WikiText-test tokens"
    )


FIELDS = [
    writer.Column("name", "model"),
    writer.Column("runtime", "runtime"),
    writer.Column("precision", "file"),
    writer.Column("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.1f}"),
    writer.Column("decode_first", "decode ms @32", ".2f"),
    writer.Column("decode_last", "decode ms @440", ".2f"),
    writer.Column("slowdown", "@440 / @32", ".2f"),
    writer.Column("prefill_ms", "prefill 128 ms", text=lambda r: f"{r['prefill_ms']['128']:.1f}"),
    writer.Column("peak_rss_mb", "peak MB", ".0f"),
    writer.Column("ppl", "ppl", ".2f"),
]


if __name__ == "__main__":
    main()
