"""ExecuTorch at the shapes users run: GPT-2 medium (24 x 1024, 16 heads of 64) and the grid student's shape at
its size (24 x 640, 10 heads of 64, MLP 2560), random weights, each in its int4 file of every runtime.

For each shape: the int4 ONNX Runtime graph as export writes it (MatMulNBits, blocks of 32, the table at 8 bits),
llama.cpp's Q4_0 (clidep's F32 GGUF through llama-quantize) and the ExecuTorch 8da4w program (XNNPACK,
ExecuTorch's own KV cache and SDPA kernels over 1,024 positions, the token table at 8 bits), each timed by
clidep's bench runner in its own process (`python -m clidep.runtime.benchrun`): the same protocol for all
three, decode after 32 and 952 tokens (952 + 8 warm-up + 64 timed fit in 1,024 positions), prefill of 128, peak
memory. Speed does not depend on the weights' values.

    python benchmarks/pte_medium.py            # ~10 min on 2 cores (ExecuTorch's lowering most of it)

Named pte_*, not executorch*: a script named executorch.py would shadow the executorch package on sys.path.

Writes OUT/pte_medium.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]
# (label, width, heads, MLP width) at GPT-2-medium depth and vocabulary
SHAPES = [("gpt2-medium 1024", 1024, 16, 4096), ("grid 640 (10 x 64)", 640, 10, 2560)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--depth", default="32,952")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.bench.provenance import provenance

    start, rows = time.time(), []
    with tempfile.TemporaryDirectory() as tmp:
        for label, width, heads, inner in SHAPES:
            for runtime, path, seconds in _files(Path(tmp), a, width, heads, inner):
                record = _measure(a, runtime, path)
                first, last = (record["decode_ms_at"][d] for d in (a.depth.split(",")[0], a.depth.split(",")[-1]))
                rows.append(
                    {
                        "shape": label,
                        "runtime": runtime,
                        "file": path.name,
                        "size_bytes": path.stat().st_size,
                        "written_s": round(seconds, 1),
                        "decode_first": first,
                        "decode_last": last,
                        "slowdown": last / first,
                        "prefill_128": record["prefill_ms"]["128"],
                        "peak_rss_mb": record["peak_rss_mb"],
                        "record": record,
                    }
                )
                print(writer.markdown(FIELDS, rows[-1:]).splitlines()[-1], flush=True)
                path.unlink()
    result = {**provenance(), "layers": a.layers, "vocab": a.vocab, "threads": a.threads, "reps": a.reps}
    result.update(wall_seconds=round(time.time() - start), rows=rows)
    heading = title(result)
    writer.write(Path(a.out), "pte_medium", FIELDS, rows, result, title=heading)
    print(writer.markdown(FIELDS, rows, heading), end="")


def _files(tmp: Path, a, width: int, heads: int, inner: int):
    """(runtime, path, seconds to write) of the shape's int4 ONNX graph, Q4_0 GGUF and 8da4w program, one at a
    time (each yielded before the next is written, so only one large file is on disk)."""
    import torch

    from clidep import CLIGPT2Config, CLIGPT2LMHeadModel
    from clidep.data import load_tokenizer
    from clidep.export.executorch import write_program
    from clidep.export.gguf import quantize_gguf, write_gguf
    from clidep.export.ort_graph import write_quantised
    from clidep.hardware.kernels import INT4_BLOCK, INT4_TABLE_BITS
    from clidep.model.convert import to_gpt2

    torch.manual_seed(0)
    config = CLIGPT2Config(
        vocab_size=a.vocab, n_positions=1024, n_embd=width, n_layer=a.layers, n_head=heads, mlp_inner=inner
    )
    model = CLIGPT2LMHeadModel(config).eval()
    folder = tmp / f"w{width}"
    folder.mkdir()
    model.config.save_pretrained(folder)
    load_tokenizer("gpt2").save_pretrained(folder)
    t = time.perf_counter()
    path, _, _ = write_quantised(model, folder / "model.int4.onnx", 4, INT4_BLOCK, INT4_TABLE_BITS)
    yield "clidep", path, time.perf_counter() - t
    t = time.perf_counter()
    write_gguf(model, folder, folder / "model.f32.gguf", "f32", f"random-{width}")
    quantize_gguf(folder / "model.f32.gguf", folder / "model.q4_0.gguf", "q4_0")
    (folder / "model.f32.gguf").unlink()
    yield "llamacpp", folder / "model.q4_0.gguf", time.perf_counter() - t
    path = folder / "model.8da4w.pte"
    yield "executorch", path, write_program(to_gpt2(model).eval(), "8da4w", path, 1024)


def _measure(a, runtime: str, path: Path) -> dict:
    """clidep's bench runner on PATH with RUNTIME, in a process of its own: its record."""
    args = [sys.executable, "-m", "clidep.runtime.benchrun", str(path), "--runtime", runtime, "--prompt-lens", "128"]
    args += ["--gen", "64", "--threads", str(a.threads), "--depth", a.depth, "--reps", str(a.reps)]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def title(result: dict) -> str:
    return (
        f"int4 files of every runtime at GPT-2-medium depth ({result['layers']} blocks, vocabulary {result['vocab']:,}, "
        f"random weights), clidep's bench runner on {result['threads']} threads, {result['reps']} repetitions (ms per "
        f"decoded token, medians), on {result['host']} at git {result['git_sha']}"
    )


FIELDS = [
    writer.Column("shape", "shape"),
    writer.Column("runtime", "runtime"),
    writer.Column("file", "file"),
    writer.Column("size_bytes", "MB", text=lambda r: f"{r['size_bytes'] / 1e6:.0f}"),
    writer.Column("decode_first", "decode ms @32", ".2f"),
    writer.Column("decode_last", "decode ms @952", ".2f"),
    writer.Column("slowdown", "@952 / @32", ".2f"),
    writer.Column("prefill_128", "prefill 128 ms", ".0f"),
    writer.Column("peak_rss_mb", "peak MB", ".0f"),
    writer.Column("written_s", "written in s", ".0f"),
]


if __name__ == "__main__":
    main()
