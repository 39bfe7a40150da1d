"""LayerCollapse alone, CLI alone and CLI + LayerCollapse at equal parameter counts, same budget.

Teacher: the reference GPT-2 in ../shared/models. The protected set (NTK critical blocks + the
last block) comes from one analysis and is shared by every arm. Arms, all teacher-initialised,
same data, token budget, schedule and seed:

* layercollapse: full width, the MLPs of every unprotected block train towards linear and
  collapse (the smallest student LayerCollapse alone can make: its size S, counted from the
  shapes, is the size of the next two arms);
* cli: the CLI bottleneck sized to S;
* cli+layercollapse: the MLPs of the less important half of the unprotected blocks (NTK) collapse
  and the bottleneck is sized so that the collapsed student is S;
* with --ratio R also cli and cli+layercollapse at R (beyond what LayerCollapse alone reaches).

Every arm runs once per seed (--seeds, default 0,1,2) and is reported as the mean ± sd of its
test perplexity with every seed's value. Every arm and the teacher are scored on the WikiText
test text with eval's sliding window.

    python benchmarks/layercollapse.py                     # default: 500k tokens per arm, --ratio 2.47, 3 seeds (~3 h, 2 cores)
    python benchmarks/layercollapse.py --seeds 0 --tokens 8192 --eval-tokens 4096 --ratio 0 --work /tmp/smoke --out /tmp/smoke   # smoke test

Writes RESULTS/layercollapse.json and .md (RESULTS defaults to benchmarks/results).
"""

from __future__ import annotations

import time
from pathlib import Path

import distil_protocol

from clidep.bench.writer import Column


def main() -> None:
    ap = distil_protocol.parser(__doc__.splitlines()[0], "layercollapse")
    ap.add_argument(
        "--ratio", type=float, default=2.47, help="also compare cli and cli+layercollapse at this ratio (0: skip)"
    )
    ap.add_argument("--lc", type=float, default=1.0, help="LayerCollapse regulariser strength")
    a = ap.parse_args()

    from clidep.compress.widths import student_config
    from clidep.model.params import param_count

    work = Path(a.work)
    setup = distil_protocol.start(a)
    protected, teacher, config = setup["protected"], setup["teacher"], setup["config"]
    unprotected = [i for i in range(config.n_layer) if i not in protected]
    kinds = ["collapsed" if i in unprotected else "standard" for i in range(config.n_layer)]
    size = param_count(student_config(config, config.layer_widths, config.layer_head_dims, kinds))  # S: all collapsed
    plans = [
        ("layercollapse", "layercollapse", "layercollapse", dict(layers=",".join(map(str, unprotected)))),
        ("cli", "cli", "cli-match", dict(params=size)),
        ("cli+layercollapse", "cli+layercollapse", "cli+lc-match", dict(params=size)),
    ]
    if a.ratio:
        plans += [
            ("cli", "cli", "cli-ratio", dict(ratio=a.ratio)),
            ("cli+layercollapse", "cli+layercollapse", "cli+lc-ratio", dict(ratio=a.ratio)),
        ]
    rows = []
    for seed in distil_protocol.seeds(a):
        common = dict(
            protect=",".join(map(str, protected)), lc=a.lc, init="teacher", **distil_protocol.train_settings(a, seed)
        )
        for name, method, folder, sizing in plans:
            rows.append(_arm(a, name, method, work / f"{folder}-s{seed}", sizing, common, teacher, seed))
    result = {
        "teacher": {"path": a.teacher, **teacher},
        "protected": protected,
        "arms": distil_protocol.summarise(rows, ("method", "size")),
        "protocol": {**distil_protocol.protocol(a, teacher), "lc": a.lc, "collapse_tol": 0.05, "init": "teacher"},
    }
    distil_protocol.write(a, "layercollapse", setup, result, title(result), FIELDS)


def _arm(a, name: str, method: str, out: Path, sizing: dict, common: dict, teacher: dict, seed: int) -> dict:
    """One arm at one seed: compress, score, and its row."""
    from clidep.commands.compress import compress

    started = time.perf_counter()
    r = compress(a.teacher, out, method=method, **sizing, **common)
    s = distil_protocol.score(a, str(out))
    lc = r.get("layercollapse") or []
    row = {
        "method": name,
        "size": "set by layercollapse" if "ratio" not in sizing else f"ratio {a.ratio}",
        "seed": seed,
        "params": r["student_params"],
        "ratio": r["ratio"],
        "ppl": s["ppl"],
        "ppl_vs_teacher": s["ppl"] / teacher["ppl"],
        "layer_widths": r["layer_widths"],
        "mlp_kinds": r["mlp_kinds"],
        "protected": r["protected"],
        "collapsed": [x["layer"] for x in lc if x["collapsed"]],
        "left_uncollapsed": [x["layer"] for x in lc if not x["collapsed"]],
        "layercollapse": lc,
        "tokens": r["tokens_trained"],
        "val_ppl_curve": r["ppl_curve"],
        "train_seconds": r["seconds"],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    distil_protocol.log(f"{name} ({row['size']}, seed {seed}): {r['student_params']:,} parameters, ppl {s['ppl']:.2f}")
    return row


def title(result: dict) -> str:
    p = result["protocol"]
    return (
        f"{distil_protocol.teacher_line(result)} Protected blocks {result['protected']}; "
        f"{p['tokens_per_arm']:,} distillation tokens per arm, teacher init, lc {p['lc']}."
    )


def _collapsed(r: dict) -> str:
    left = f" (left: {r['left_uncollapsed']})" if r["left_uncollapsed"] else ""
    return f"{r['collapsed'] or '-'}{left}"


FIELDS = [
    Column("method", "method"),
    Column("size", "size"),
    Column("params", "params", text=lambda r: f"{r['params'] / 1e6:.2f} M"),
    Column("ratio", "ratio", ".2f"),
    Column("layer_widths", "widths", text=lambda r: "/".join(map(str, sorted(set(r["layer_widths"]), reverse=True)))),
    Column("collapsed", "collapsed MLPs", text=_collapsed),
    *distil_protocol.ppl_fields(),
]


if __name__ == "__main__":
    main()
