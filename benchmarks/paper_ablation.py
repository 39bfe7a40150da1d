"""The AutoCompress ablation at reference scale: CLI vs a uniform bottleneck of the same size.

Teacher: the reference GPT-2 in ../shared/models (no pretrained GPT-2 can be downloaded here).
Arms: CLI at --ratio with the protected set from the NTK analysis, and the uniform bottleneck
matched to it in parameters; both with teacher and random initialisation; identical data,
token budget, schedule and seed. Every arm and the teacher are scored on the WikiText test text
with the same sliding window.

    python benchmarks/paper_ablation.py                          # default: 500k tokens per arm (~40 min, 2 cores)
    python benchmarks/paper_ablation.py --tokens 20000 --eval-tokens 20000 --out /tmp/smoke   # smoke test
    # paper scale, where the hub and a GPU are reachable (one GPU: bf16 through Accelerate):
    python benchmarks/paper_ablation.py --teacher gpt2-medium --data wikitext-103 --eval-data wikitext-103 \\
        --context 1024 --stride 512 --tokens 100000000 --batch-size 32 --seq-len 1024

Writes RESULTS/paper_ablation.json and .md (RESULTS defaults to benchmarks/results).
"""

from __future__ import annotations

import time
from pathlib import Path

import distil_protocol

from clidep.bench.report import Field


def main() -> None:
    ap = distil_protocol.parser(__doc__.splitlines()[0], "paper_ablation")
    ap.add_argument("--ratio", type=float, default=2.47)
    ap.add_argument("--inits", default="teacher,random")
    a = ap.parse_args()

    from clidep.compress.pipeline import compress

    work = Path(a.work)
    setup = distil_protocol.start(a)
    report, teacher = setup["report"], setup["teacher"]
    arms = []
    common = distil_protocol.train_settings(a)
    protect = ",".join(map(str, setup["protected"]))
    for init in a.inits.split(","):
        cli_dir = work / f"cli-{init}"
        started = time.perf_counter()
        cli = compress(a.teacher, cli_dir, method="cli", ratio=a.ratio, protect=protect, init=init, **common)
        arms.append({"method": "cli", "init": init, "dir": str(cli_dir), "result": cli, "wall_s": time.perf_counter() - started})
        uni_dir = work / f"uniform-{init}"
        started = time.perf_counter()
        uni = compress(a.teacher, uni_dir, method="uniform", match=str(cli_dir), init=init, **common)
        arms.append({"method": "uniform", "init": init, "dir": str(uni_dir), "result": uni, "wall_s": time.perf_counter() - started})
    rows = []
    for arm in arms:
        r = arm["result"]
        s = distil_protocol.score(a, arm["dir"])
        rows.append({"method": arm["method"], "init": arm["init"], "params": r["student_params"], "ratio": r["ratio"],
                     "layer_widths": r["layer_widths"], "protected": r["protected"], "ppl": s["ppl"],
                     "ppl_vs_teacher": s["ppl"] / teacher["ppl"], "tokens": r["tokens_trained"],
                     "val_ppl_curve": r["ppl_curve"], "train_seconds": r["seconds"]})
        distil_protocol.log(f"{arm['method']}/{arm['init']}: ppl {s['ppl']:.2f}")
    for row in rows:
        cli_row = next(x for x in rows if x["method"] == "cli" and x["init"] == row["init"])
        row["uniform_over_cli"] = row["ppl"] / cli_row["ppl"] if row["method"] == "uniform" else None
    result = {
        "teacher": {"path": a.teacher, **teacher},
        "layer0_ratio": report["layer0_ratio"],
        "critical_layers": report["critical_layers"],
        "arms": rows,
        "protocol": distil_protocol.protocol(a, teacher),
    }
    distil_protocol.write(a, "paper_ablation", setup, result, title(result), FIELDS, (PAPER_ROW,))


def title(result: dict) -> str:
    return (f"{distil_protocol.teacher_line(result)} Layer-0 NTK ratio {result['layer0_ratio']:.1f}x (paper: > 60x). "
            f"{result['protocol']['tokens_per_arm']:,} distillation tokens per arm.")


FIELDS = [
    Field("method", "method"), Field("init", "init"), Field("params", "params", text=lambda r: f"{r['params'] / 1e6:.2f} M"),
    Field("ratio", "ratio", ".2f"), Field("ppl", "ppl", ".2f"), Field("ppl_vs_teacher", "ppl / teacher", ".2f"),
    Field("uniform_over_cli", "uniform / CLI", text=lambda r: f"{r['uniform_over_cli']:.2f}" if r["uniform_over_cli"] else ""),
]
PAPER_ROW = "| paper: CLI-GPT2 / uniform (GPT-2 medium) | ? | 143.8 M | 2.47 | 204.5 / 571.8 | | 2.80 |"


if __name__ == "__main__":
    main()
