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

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--ratio", type=float, default=2.47)
    ap.add_argument("--data", default=None, help="training text (default: offline wiki-en)")
    ap.add_argument("--eval-data", default="wikitext-test")
    ap.add_argument("--tokens", type=int, default=500_000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--eval-tokens", type=int, default=0, help="score only the first N tokens (0: the whole text)")
    ap.add_argument("--inits", default="teacher,random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(ROOT / "runs" / "paper_ablation"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from clidep.analyze import analyze
    from clidep.compress import compress
    from clidep.convert import load_model
    from clidep.data import load_tokenizer, read_text
    from clidep.evaluate import tokenize_text
    from clidep.params import param_count
    from clidep.perplexity import perplexity, torch_logits_fn

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    work = Path(a.work)
    text, label = read_text(a.eval_data)

    def score(path: str) -> dict:
        ids = tokenize_text(load_tokenizer(path), text)
        ids = ids[: a.eval_tokens + 1] if a.eval_tokens else ids
        res = perplexity(torch_logits_fn(load_model(path)), ids, a.context, a.stride, 8)
        return {"ppl": res.ppl, "tokens": res.tokens}

    t0 = time.perf_counter()
    report = analyze(a.teacher, samples=8, seq_len=min(a.seq_len, 128), probes=16, method="ntk", seed=a.seed)
    teacher = {"params": param_count(load_model(a.teacher).config), **score(a.teacher)}
    log(f"teacher: {teacher}; layer-0 NTK ratio {report['layer0_ratio']:.2f}")
    arms = []
    common = dict(data=a.data, tokens=a.tokens, batch_size=a.batch_size, seq_len=a.seq_len, seed=a.seed,
                  eval_every=max(1, a.tokens // (a.batch_size * a.seq_len) // 8), save_every=100, overwrite=True, log=log)
    protect = ",".join(str(i) for i in sorted(set(report["critical_layers"]) | {len(report["scores"]) - 1}))
    for init in a.inits.split(","):
        cli_dir = work / f"cli-{init}"
        started = time.perf_counter()
        cli = compress(a.teacher, cli_dir, "cli", ratio=a.ratio, protect=protect, init=init, **common)
        arms.append({"method": "cli", "init": init, "dir": str(cli_dir), "result": cli, "wall_s": time.perf_counter() - started})
        uni_dir = work / f"uniform-{init}"
        started = time.perf_counter()
        uni = compress(a.teacher, uni_dir, "uniform", match=str(cli_dir), init=init, **common)
        arms.append({"method": "uniform", "init": init, "dir": str(uni_dir), "result": uni, "wall_s": time.perf_counter() - started})
    rows = []
    for arm in arms:
        r = arm["result"]
        s = score(arm["dir"])
        rows.append({"method": arm["method"], "init": arm["init"], "params": r["student_params"], "ratio": r["ratio"],
                     "layer_widths": r["layer_widths"], "protected": r["protected"], "ppl": s["ppl"],
                     "ppl_vs_teacher": s["ppl"] / teacher["ppl"], "tokens": r["tokens_trained"],
                     "val_ppl_curve": r["ppl_curve"], "train_seconds": r["seconds"]})
        log(f"{arm['method']}/{arm['init']}: ppl {s['ppl']:.2f}")
    for row in rows:
        cli_row = next(x for x in rows if x["method"] == "cli" and x["init"] == row["init"])
        row["uniform_over_cli"] = row["ppl"] / cli_row["ppl"] if row["method"] == "uniform" else None
    result = {
        "machine": f"{platform.node()} ({platform.machine()}, {__import__('os').cpu_count()} cores, CPU)",
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "teacher": {"path": a.teacher, **teacher},
        "layer0_ratio": report["layer0_ratio"],
        "critical_layers": report["critical_layers"],
        "arms": rows,
        "protocol": {"eval_data": label, "context": a.context, "stride": a.stride, "eval_tokens": teacher["tokens"],
                     "train_data": a.data or "wiki-en (offline)", "tokens_per_arm": a.tokens, "batch_size": a.batch_size,
                     "seq_len": a.seq_len, "seed": a.seed},
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper_ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"Teacher {teacher['params'] / 1e6:.2f} M parameters, ppl {teacher['ppl']:.2f} ({label}, context {a.context}, "
        f"stride {a.stride}, {teacher['tokens']:,} tokens). Layer-0 NTK ratio {report['layer0_ratio']:.1f}x (paper: > 60x). "
        f"{a.tokens:,} distillation tokens per arm.",
        "",
        "| method | init | params | ratio | ppl | ppl / teacher | uniform / CLI |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        u = f"{r['uniform_over_cli']:.2f}" if r["uniform_over_cli"] else ""
        lines.append(f"| {r['method']} | {r['init']} | {r['params'] / 1e6:.2f} M | {r['ratio']:.2f} | {r['ppl']:.2f} | "
                     f"{r['ppl_vs_teacher']:.2f} | {u} |")
    lines.append("| paper: CLI-GPT2 / uniform (GPT-2 medium) | ? | 143.8 M | 2.47 | 204.5 / 571.8 | | 2.80 |")
    (out / "paper_ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
