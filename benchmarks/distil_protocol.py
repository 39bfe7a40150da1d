"""The protocol the distillation benchmarks share: their options, the teacher's analysis, the scoring.

paper_ablation.py and layercollapse.py compare students trained on the same data with the same
budget and schedule, each arm once per seed (the seed sets the data order, the calibration batch
of teacher init, and random init), and score them all with clidep eval's sliding window. Arms
are summarised as per-seed perplexities, their mean and sample standard deviation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parser(description: str, work: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--teacher", default=str(ROOT.parent / "shared" / "models" / "ref-gpt2-12l"))
    ap.add_argument("--data", default=None, help="training text (default: offline wiki-en)")
    ap.add_argument("--eval-data", default="wikitext-test")
    ap.add_argument("--tokens", type=int, default=500_000, help="distillation tokens per arm")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--eval-tokens", type=int, default=0, help="score only the first N tokens (0: the whole text)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated: every arm runs once per seed")
    ap.add_argument("--work", default=str(ROOT / "runs" / work))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return ap


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start(a) -> dict:
    """The run's provenance (the commit and time it starts from), the teacher's NTK report
    (8 x 128 tokens, 16 probes), its config, size and score, and the protected set."""
    from clidep.bench.provenance import provenance
    from clidep.compress.analyze import analyze
    from clidep.compress.widths import protected_blocks
    from clidep.model.convert import load_model
    from clidep.model.params import param_count

    t0, started_at = time.perf_counter(), provenance()
    report = analyze(a.teacher, samples=8, seq_len=min(a.seq_len, 128), probes=16, method="ntk", seed=0)
    protected = protected_blocks(report["critical_layers"], len(report["scores"]))
    config = load_model(a.teacher).config
    teacher = {"params": param_count(config), **score(a, a.teacher)}
    log(f"teacher: {teacher}; layer-0 NTK ratio {report['layer0_ratio']:.2f}; protected blocks {protected}")
    return {
        "t0": t0,
        "provenance": started_at,
        "report": report,
        "protected": protected,
        "config": config,
        "teacher": teacher,
    }


def write(a, name: str, setup: dict, result: dict, title: str, fields: list, extra_rows: tuple[str, ...] = ()) -> None:
    """OUT/NAME.json (provenance first, wall time last), and NAME.md / .csv / .jsonl of the arms
    from one field list (clidep's report writer; every arm carries the run's provenance). The
    table also goes to stdout; EXTRA_ROWS are Markdown rows appended to it (published figures)."""
    from clidep.bench import writer

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {**setup["provenance"], **result, "wall_seconds": round(time.perf_counter() - setup["t0"], 1)}
    arms = [{**arm, "provenance": setup["provenance"]} for arm in result["arms"]]
    writer.write(out, name, fields, arms, record, title)
    table = writer.markdown(fields, arms, title) + "".join(row + "\n" for row in extra_rows)
    (out / f"{name}.md").write_text(table)
    print(table, end="")


def teacher_line(result: dict) -> str:
    """The first sentence of every distillation table: the teacher and the evaluation protocol."""
    t, p = result["teacher"], result["protocol"]
    return (
        f"Teacher {t['params'] / 1e6:.2f} M parameters, ppl {t['ppl']:.2f} ({p['eval_data']}, context {p['context']}, "
        f"stride {p['stride']}, {t['tokens']:,} tokens)."
    )


def score(a, path: str) -> dict:
    from clidep.commands.eval import evaluate

    res = evaluate(
        path, data=a.eval_data, context=a.context, stride=a.stride, batch_size=8, max_tokens=a.eval_tokens or None
    )
    return {"ppl": res.ppl, "tokens": res.tokens, "data": res.data}


#: WikiText-test tokens a student's answers are compared with the teacher's on (answers.py's protocol).
KLD_TOKENS = 16384


def kld(a, path: str, tokens: int = KLD_TOKENS) -> dict:
    """PATH's next-token distributions against A.teacher's on the first TOKENS WikiText-test tokens (context 256,
    stride 128): mean and 99th-percentile KL divergence (nats), top-1 agreement, and both perplexities on those
    tokens. The teacher runs once: eval keeps its answers for the text."""
    from clidep.commands.eval import compare

    found = compare(path, a.teacher, max_tokens=tokens, context=256, stride=128, batch_size=8)
    return {k: found[k] for k in ("kld_mean", "kld_p99", "top1", "ppl", "reference_ppl")}


def seeds(a) -> list[int]:
    return [int(x) for x in a.seeds.split(",") if x.strip()]


def summarise(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """One row per arm (rows alike in KEYS): the first seed's fields, plus every seed's perplexity,
    their mean and sample standard deviation (0 for one seed)."""
    import numpy as np

    arms: dict[tuple, list[dict]] = {}
    for r in rows:
        arms.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for group in arms.values():
        ppl = [r["ppl"] for r in group]
        kld = [r["kld"]["kld_mean"] for r in group if r.get("kld")]
        out.append(
            {
                **group[0],
                "seeds": [r["seed"] for r in group],
                "ppl_seeds": ppl,
                "ppl_mean": float(np.mean(ppl)),
                "ppl_sd": float(np.std(ppl, ddof=1)) if len(ppl) > 1 else 0.0,
                "params_seeds": [r["params"] for r in group],
                # KL divergence to the teacher (mean, sd over seeds) where every seed has it, else None
                "kld": [float(np.mean(kld)), float(np.std(kld, ddof=1)) if len(kld) > 1 else 0.0]
                if len(kld) == len(group)
                else None,
                "runs": group,
            }
        )
    return out


def ppl_fields() -> list:
    """The perplexity columns of a seeded table: mean ± sd, then every seed's value."""
    from clidep.bench.writer import Column

    def mean_sd(r: dict) -> str:
        n = len(r["ppl_seeds"])
        return f"{r['ppl_mean']:.2f} ± {r['ppl_sd']:.2f}" if n > 1 else f"{r['ppl_mean']:.2f} (1 seed)"

    return [
        Column("ppl_mean", "ppl mean ± sd", text=mean_sd),
        Column("ppl_seeds", "ppl per seed", text=lambda r: " / ".join(f"{x:.2f}" for x in r["ppl_seeds"])),
    ]


def train_settings(a, seed: int) -> dict:
    """compress() keywords every arm shares: data, budget, schedule, SEED, evaluation every 1/8 of the run."""
    return dict(
        data=a.data,
        tokens=a.tokens,
        batch_size=a.batch_size,
        seq_len=a.seq_len,
        seed=seed,
        eval_every=max(1, a.tokens // (a.batch_size * a.seq_len) // 8),
        save_every=100,
        overwrite=True,
        log=log,
    )


def protocol(a, teacher: dict) -> dict:
    return {
        "eval_data": teacher["data"],
        "context": a.context,
        "stride": a.stride,
        "eval_tokens": teacher["tokens"],
        "train_data": a.data or "wiki-en (offline)",
        "tokens_per_arm": a.tokens,
        "batch_size": a.batch_size,
        "seq_len": a.seq_len,
        "seeds": seeds(a),
    }
