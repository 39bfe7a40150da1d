"""Where an ExecuTorch program's decode goes with the context: ExecuTorch's attention kernel alone.

`llama::custom_sdpa` (the kernel export/et_model.py's programs attend through; its PyTorch registration runs the
same C++ code) for one new token over a cache of 1,024 positions filled to 32 and to 952, per block and times
the blocks, at the two shapes of benchmarks/pte_medium.py (GPT-2 medium: 16 heads of 64; the grid student's
shape at its size: 10 heads of 64; 24 blocks), 2 threads, the cache warm in this core's caches (the program reads
it from memory: this is the kernel's floor, not its cost there). Set beside pte_medium.md's decode rows, it
says how much of the program's slowdown from 32 to 952 tokens is attention arithmetic.

    python benchmarks/pte_sdpa.py            # ~1 min on 2 cores

Writes OUT/pte_sdpa.json, .md, .csv and .jsonl (OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from clidep.bench import writer

ROOT = Path(__file__).resolve().parents[1]
# (label, heads) at head size 64, as in pte_medium.py
SHAPES = [("gpt2-medium 1024", 16), ("grid 640 (10 x 64)", 10)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--positions", type=int, default=1024)
    ap.add_argument("--depth", default="32,952")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    import torch
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers llama::custom_sdpa)

    from clidep.bench.provenance import provenance

    torch.set_num_threads(a.threads)
    start, rows = time.time(), []
    for label, heads in SHAPES:
        q = torch.randn(1, 1, heads, 64)  # one new token: (B, T, nh, hs)
        k, v = torch.randn(1, a.positions, heads, 64), torch.randn(1, a.positions, heads, 64)
        for depth in map(int, a.depth.split(",")):
            samples = _times(lambda: torch.ops.llama.custom_sdpa(q, k, v, depth, None, 0.0, True, 0.125), a.calls)
            ms = float(np.median(samples))
            rows.append(
                {
                    "shape": label,
                    "heads": heads,
                    "depth": depth,
                    "block_ms": ms,
                    "program_ms": ms * a.layers,
                    "samples": samples,
                }
            )
            print(writer.markdown(FIELDS, rows[-1:]).splitlines()[-1], flush=True)
    result = {**provenance(), "layers": a.layers, "positions": a.positions, "threads": a.threads, "calls": a.calls}
    result.update(wall_seconds=round(time.time() - start), rows=rows)
    heading = title(result)
    writer.write(Path(a.out), "pte_sdpa", FIELDS, rows, result, title=heading)
    print(writer.markdown(FIELDS, rows, heading), end="")


def _times(call, n: int) -> list[float]:
    """ms of each of N calls, after 20 untimed ones."""
    for _ in range(20):
        call()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t) * 1e3)
    return samples


def title(result: dict) -> str:
    return (
        f"ExecuTorch's llama::custom_sdpa for one new token over a {result['positions']:,}-position cache, head size "
        f"64, {result['threads']} threads, median of {result['calls']} calls (warm cache), times {result['layers']} "
        f"blocks, on {result['host']} at git {result['git_sha']}"
    )


FIELDS = [
    writer.Column("shape", "shape"),
    writer.Column("heads", "heads"),
    writer.Column("depth", "filled positions"),
    writer.Column("block_ms", "ms a block", ".3f"),
    writer.Column("program_ms", "ms a token (all blocks)", ".2f"),
]


if __name__ == "__main__":
    main()
