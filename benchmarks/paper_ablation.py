"""The AutoCompress ablation at reference scale: CLI, the uniform bottleneck and auto at one size, with seeds.

Teacher: the reference GPT-2 in ../shared/models (no pretrained GPT-2 can be downloaded here).
Arms: CLI at --ratio with the protected set from the NTK analysis; the uniform bottleneck and
auto (widths from importance scores, `compress --method auto`) sized to CLI's parameter count
(within 2%); each with every --init, once per seed, on identical data, token budget and schedule.
Methods run in --methods order, every seed of one before the next; an arm whose folder already
holds a finished student of the same method, seed and budget is scored again, not retrained.
Each student's shipped files (--shipped, the default: its int4 ONNX file and, for a stock GPT-2, its
Q4_K_M or Q4_0 GGUF, as `clidep export` writes them) are scored beside it, as the fp32 student is.
auto searches its scorer and exponent on wiki-en/valid.txt at the first seed, and the later
seeds reuse that choice (the search is part of the method; repeating it per seed would only
re-time it). Every arm and the teacher are scored on the WikiText test text with the same
sliding window.

    python benchmarks/paper_ablation.py                          # 7 methods x 3 seeds with their files, 500k tokens each (~5 h, 2 cores)
    python benchmarks/paper_ablation.py --methods grid --keep    # grid's students beside the kept arms (runs/paper_ablation)
    python benchmarks/paper_ablation.py --methods slim,depth,depth+slim --keep   # add arms to the published table
    python benchmarks/paper_ablation.py --methods uniform,auto --tokens 2000000 --stem paper_ablation_2m   # the budget question
    python benchmarks/paper_ablation.py --ratio 4 --stem paper_ablation_4x --methods uniform,auto,slim,depth,depth+slim,grid   # a second size (CLI cannot reach 4x here)
    python benchmarks/paper_ablation.py --seeds 0 --tokens 20000 --eval-tokens 20000 --search-steps 2 --out /tmp/smoke   # smoke
    # paper scale, where the hub and a GPU are reachable (one GPU: bf16 through Accelerate):
    python benchmarks/paper_ablation.py --teacher gpt2-medium --data wikitext-103 --eval-data wikitext-103 \\
        --context 1024 --stride 512 --tokens 100000000 --batch-size 32 --seq-len 1024

Writes RESULTS/STEM.json, .md, .csv, .jsonl and STEM.png (test perplexity against parameters),
after every arm, so an interrupted run keeps what it finished (RESULTS defaults to
benchmarks/results, STEM to paper_ablation).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import distil_protocol
import gpt2_shapes
import shipped_ppl

from clidep.bench.writer import Column
from clidep.errors import ClidepError, NoMatrixOfType

#: The arms, in the table's order.
METHODS = ("cli", "uniform", "auto", "slim", "depth", "depth+slim", "grid")
#: The arms whose shape comes from a search ranked by --precision's file.
SEARCHED = ("auto", "depth+slim", "grid")


def main() -> None:
    ap = distil_protocol.parser(__doc__.splitlines()[0], "paper_ablation")
    ap.add_argument("--ratio", type=float, default=2.47)
    ap.add_argument("--inits", default="teacher")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the runs (method, init, seed) this run does not make from RESULTS/STEM.json (same protocol)",
    )
    ap.add_argument(
        "--precision",
        default="int4",
        choices=("fp32", "int8", "int4"),
        help="the file the searching methods (auto, depth+slim, grid) rank their trials by (compress --precision)",
    )
    ap.add_argument(
        "--shipped",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="export each student's int4 ONNX and Q4 GGUF files and score them like the student (~4 min an arm)",
    )
    ap.add_argument("--search-steps", type=int, default=16, help="auto: distillation steps per candidate")
    ap.add_argument("--stem", default="paper_ablation")
    a = ap.parse_args()

    from clidep.commands.compress import compress
    from clidep.compress.widths import solve

    # Each table its own folder of students: runs/STEM unless --work is given.
    work = Path(a.work) if a.work != ap.get_default("work") else distil_protocol.ROOT / "runs" / a.stem
    setup = distil_protocol.start(a)
    teacher = setup["teacher"]
    protect = ",".join(map(str, setup["protected"]))
    (rows, refused), chosen = _kept(a, teacher) if a.keep else ([], {}), {}
    # CLI's size where the table has CLI (run now or kept: the others match it); else the ratio's own (CLI
    # cannot reach ratio 4 on the reference teacher: its embeddings and protected blocks alone are ratio 3.07).
    target = round(teacher["params"] / a.ratio)
    with_cli = "cli" in a.methods.split(",") or any(r["method"] == "cli" for r in rows)
    size = solve(setup["config"], "cli", target, setup["protected"]).params if with_cli else target
    # Method by method, seeds inside: an interrupted run has every seed of the methods it finished.
    for method, init, seed in [
        (m, i, s) for m in a.methods.split(",") for i in a.inits.split(",") for s in distil_protocol.seeds(a)
    ]:
        out = work / f"{method}-{init}-s{seed}"
        if method in refused:
            continue
        sizing = dict(ratio=a.ratio, protect=protect) if method == "cli" else dict(params=size)
        if method == "auto":
            sizing.update(chosen.get(init, {}))
        if method in SEARCHED:
            sizing.update(search_steps=a.search_steps, precision=a.precision)
        started = time.perf_counter()
        try:
            r = _finished(out, method, seed, a.tokens, a.ratio, a.precision) or compress(
                a.teacher, out, method=method, init=init, **sizing, **distil_protocol.train_settings(a, seed)
            )
        except ClidepError as exc:  # a method that cannot reach this size (depth at ratio 4): said, not fatal
            refused[method] = str(exc)
            distil_protocol.log(f"{method}: refused at this size: {exc}")
            _write(a, setup, rows, refused)
            continue
        if method == "auto" and init not in chosen:
            chosen[init] = dict(
                scorer=r["auto"]["scorer"] if r["auto"]["scorer"] != "-" else "ntk", gamma=str(r["auto"]["gamma"])
            )
        s = distil_protocol.score(a, str(out))
        answers = distil_protocol.kld(a, str(out))
        shipped = _shipped(a, out, s["ppl"]) if a.shipped else None
        rows.append(
            {
                "method": method,
                "init": init,
                "seed": seed,
                "params": r["student_params"],
                "ratio": r["ratio"],
                "layer_widths": r["layer_widths"],
                "protected": r["protected"],
                "auto": r.get("auto"),
                "stock": r.get("stock"),
                "ppl": s["ppl"],
                "ppl_vs_teacher": s["ppl"] / teacher["ppl"],
                "kld": answers,
                "shipped": shipped,
                "precision": a.precision if method in SEARCHED else None,
                "tokens": r["tokens_trained"],
                "val_ppl": r["val_ppl"],
                "val_ppl_curve": r["ppl_curve"],
                "train_seconds": r["seconds"],
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
        distil_protocol.log(f"{method}/{init}/seed {seed}: {r['student_params']:,} parameters, ppl {s['ppl']:.2f}")
        _write(a, setup, rows, refused)


def _kept(a, teacher: dict) -> tuple[list[dict], dict[str, str]]:
    """The per-seed rows of RESULTS/STEM.json this run does not make, when that run had this protocol (teacher
    perplexity, tokens per arm, ratio; seeds may differ, each arm lists its own), each marked with the commit and
    time it was measured at, and its refusals of methods not in --methods; else none, said."""
    import json

    path = Path(a.out) / f"{a.stem}.json"
    if not path.is_file():
        return [], {}
    old = json.loads(path.read_text())
    p = old["protocol"]
    same = (
        abs(old["teacher"]["ppl"] - teacher["ppl"]) < 1e-6 and p["tokens_per_arm"] == a.tokens and p["ratio"] == a.ratio
    )
    if not same:
        distil_protocol.log(f"--keep: {path} has another protocol; its arms are not kept")
        return [], {}
    now = {(m, i, s) for m in a.methods.split(",") for i in a.inits.split(",") for s in distil_protocol.seeds(a)}
    measured = {"git_sha": old["git_sha"], "time": old["time"]}
    rows = [
        {**run, "measured": run.get("measured", measured)}
        for arm in old["arms"]
        for run in arm["runs"]
        if (run["method"], run["init"], run["seed"]) not in now
    ]
    return rows, {m: why for m, why in old.get("refused", {}).items() if m not in a.methods.split(",")}


def _finished(out: Path, method: str, seed: int, tokens: int, ratio: float, precision: str) -> dict | None:
    """compress.json of a student already in OUT from the same method, seed, budget and size (ratio within
    10%: depth lands within half a block of it), whose search (auto, depth+slim, grid) ranked its trials by
    PRECISION's file as run.json's options say (scored again, not retrained: the pipeline is deterministic on
    CPU), else None."""
    import json
    import math

    path = out / "compress.json"
    if not path.is_file() or not (out / "run.json").is_file():
        return None
    r = json.loads(path.read_text())
    options = json.loads((out / "run.json").read_text()).get("options", {})
    steps = math.ceil(tokens / (r["train"]["batch_size"] * r["train"]["seq_len"]))
    same = (
        r["method"] == method
        and r["train"]["seed"] == seed
        and r["steps"] == steps
        and abs(r["ratio"] / ratio - 1) < 0.1
        and (method not in SEARCHED or options.get("precision") == precision)
    )
    return r if same else None


def _shipped(a, student: Path, fp32_ppl: float) -> dict:
    """The files a user ships from STUDENT, written by export as shipped_ppl.py writes them (QKV at 8 bits in the
    int4 file) and each scored like the student: the int4 ONNX file in ONNX Runtime and, for a stock GPT-2, the
    Q4 GGUF in llama.cpp: Q4_K_M where every row splits into llama.cpp's 256-weight blocks (width and MLP width
    multiples of 256), else Q4_0 (a k-quant file of other shapes falls back to wider types). Δ against the
    student's fp32 perplexity (FP32_PPL, torch); the Q4 file's MB against its F16 file's."""
    import tempfile

    shape = gpt2_shapes.stock_shape(student)
    stock = shape is not None
    q4 = "q4_k_m" if stock and shape[1] % 256 == 0 and shape[2] % 256 == 0 else "q4_0"
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "files"
        try:
            manifest = shipped_ppl.export_files(str(student), folder, f"f16,{q4}" if stock else None)
        except NoMatrixOfType as exc:  # export refuses a Q4 file that would hold no Q4 matrix: said, int4 still scored
            found["gguf"] = {"type": q4, "refused": str(exc)}
            folder = Path(tmp) / "int4"
            stock, manifest = False, shipped_ppl.export_files(str(student), folder, None)
        files = [("int4", "model.int4.onnx")] + ([(q4, f"gguf/model.{q4}.gguf")] if stock else [])
        for label, name in files:
            ppl = distil_protocol.score(a, str(folder / name))["ppl"]
            found["int4" if label == "int4" else "gguf"] = {
                "type": label,
                "ppl": ppl,
                "delta": ppl / fp32_ppl - 1,
                "mb": (folder / name).stat().st_size / 1e6,
                "variant": shipped_ppl.variant(manifest, name),
            }
        if stock:
            found["gguf"]["f16_mb"] = (folder / "gguf" / "model.f16.gguf").stat().st_size / 1e6
        flips = {
            Path(f["file"]).name: {**f["greedy_flip"], "type": f["type"], "max_abs_logit_diff": f["max_abs_logit_diff"]}
            for f in manifest.get("gguf", {}).get("files", [])
            if f.get("greedy_flip")
        }
        if flips:  # where each GGUF file's continuation left PyTorch's (gguf_check), kept with their figures
            found["greedy_flips"] = flips
    gguf = found.get("gguf", {})
    distil_protocol.log(
        f"{student.name}: int4 {found['int4']['ppl']:.2f}, "
        + (f"{q4} {gguf['ppl']:.2f}" if "ppl" in gguf else gguf.get("refused", "not a stock GPT-2: no GGUF"))
    )
    return found


def _write(a, setup: dict, rows: list[dict], refused: dict[str, str]) -> None:
    rows = sorted(rows, key=_order)
    arms = distil_protocol.summarise(rows, ("method", "init"))
    for arm in arms:  # against the best mean of the same init
        best = min(x["ppl_mean"] for x in arms if x["init"] == arm["init"])
        arm["vs_best"] = arm["ppl_mean"] / best
        arm["shipped_mean"] = _shipped_mean(arm["runs"])
    result = {
        "teacher": {"path": a.teacher, **setup["teacher"]},
        "layer0_ratio": setup["report"]["layer0_ratio"],
        "critical_layers": setup["report"]["critical_layers"],
        "arms": arms,
        "refused": refused,
        "protocol": {
            **distil_protocol.protocol(a, setup["teacher"]),
            "seeds": sorted({r["seed"] for r in rows}),  # the table's, kept runs included
            "ratio": a.ratio,
            "search_steps": a.search_steps,
        },
    }
    distil_protocol.write(
        a, a.stem, setup, result, title(result), FIELDS, (PAPER_ROW,) if a.stem == "paper_ablation" else ()
    )
    plot(result, Path(a.out) / f"{a.stem}.png")


def plot(result: dict, path: Path) -> None:
    """Test perplexity against parameters: every seed a small mark, each arm's mean a large one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clidep.files import atomic_write

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in result["arms"]:
        label = f"{arm['method']} ({arm['init']})"
        dots = ax.scatter([p / 1e6 for p in arm["params_seeds"]], arm["ppl_seeds"], s=14, alpha=0.6)
        ax.errorbar(
            arm["params"] / 1e6,
            arm["ppl_mean"],
            yerr=arm["ppl_sd"],
            fmt="o",
            ms=8,
            color=dots.get_facecolor()[0],
            label=f"{label}: {arm['ppl_mean']:.2f} ± {arm['ppl_sd']:.2f}",
        )
    ax.axhline(
        result["teacher"]["ppl"],
        color="grey",
        ls="--",
        lw=1,
        label=f"teacher ({result['teacher']['params'] / 1e6:.1f} M): {result['teacher']['ppl']:.2f}",
    )
    ax.set_xlabel("student parameters (M)")
    ax.set_ylabel("WikiText test perplexity")
    ax.set_title(
        f"ratio {result['protocol']['ratio']}, {result['protocol']['tokens_per_arm']:,} tokens per arm", fontsize=9
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=110))
    plt.close(fig)


def title(result: dict) -> str:
    p = result["protocol"]
    return (
        f"{distil_protocol.teacher_line(result)} Layer-0 NTK ratio {result['layer0_ratio']:.1f}x (paper: > 60x). "
        f"{p['tokens_per_arm']:,} distillation tokens per arm, seeds {p['seeds']}"
        + (
            " (an arm kept from an earlier run lists its own)."
            if any(arm["seeds"] != p["seeds"] for arm in result["arms"])
            else "."
        )
        + "".join(f" {m} refused at this size: {why}." for m, why in result.get("refused", {}).items())
        + _kld_line(result)
        + _shipped_line(result)
        + _flips_line(result)
    )


def _shipped_line(result: dict) -> str:
    if not any(arm.get("shipped_mean") for arm in result["arms"]):
        return ""
    return (
        " Shipped files: `clidep export STUDENT --int4 --gguf` (export's defaults: QKV at 8 bits in the int4 file), "
        "each scored like the fp32 student, Δ against it (mean over the seeds that have it); the GGUF is Q4_K_M where "
        "width and MLP width are multiples of 256, else Q4_0, its size against its F16 file; '-': the student was not "
        "kept (a run kept from an earlier commit names it in the JSON's 'measured')."
    )


def _flips_line(result: dict) -> str:
    """The near-tie swaps the shipped files' GGUF check accepted (F32 and F16 files, whose greedy continuation it
    gates, by the type each flip records; a Q4 file's may part anywhere), each with PyTorch's margin and the allowed
    one."""
    flips = [
        f"{run['method']} seed {run['seed']}'s {file} at token {flip['token']}: PyTorch's margin "
        f"{flip['pytorch_margin']:.2g}, logits within {flip['max_abs_logit_diff']:.2g} (allowed {flip['allowed_margin']:.2g})"
        for arm in result["arms"]
        for run in arm.get("runs", [])
        for file, flip in ((run.get("shipped") or {}).get("greedy_flips") or {}).items()
        if flip.get("type") in ("f32", "f16")
    ]
    if not flips:
        return ""
    return (
        " The GGUF check accepted a greedy continuation leaving PyTorch's at a near-tie (PyTorch's margin between "
        "the two tokens within twice the file's largest logit difference): " + "; ".join(flips) + "."
    )


def _kld_line(result: dict) -> str:
    if not any(arm.get("kld") for arm in result["arms"]):
        return " KLD to teacher: not measured (these students came before it, and were not kept)."
    return (
        f" KLD to teacher: the fp32 student's next-token distributions against the teacher's on "
        f"{distil_protocol.KLD_TOKENS:,} WikiText-test tokens (context 256, stride 128; nats, mean ± sd over seeds)."
    )


def _kld(r: dict) -> str:
    return "-" if not r.get("kld") else f"{r['kld'][0]:.4f} ± {r['kld'][1]:.4f}"


def _order(run: dict) -> tuple[int, int]:
    """A run's place in the table: its method's in METHODS (others last), then its seed."""
    return (METHODS.index(run["method"]) if run["method"] in METHODS else len(METHODS), run["seed"])


def _shipped_mean(runs: list[dict]) -> dict:
    """Per shipped file (int4, gguf): the mean perplexity and Δ over the seeds that measured it, their count, the
    GGUF type and the Q4 / F16 size, and how many seeds' files export refused (a shape whose rows split into no
    block: grid's search may pick another shape per seed); a file no seed has is absent."""
    import numpy as np

    out = {}
    for kind in ("int4", "gguf"):
        found = [r["shipped"][kind] for r in runs if (r.get("shipped") or {}).get(kind)]
        measured = [f for f in found if "ppl" in f]
        refused = len(found) - len(measured)
        if found and not measured:  # export refused every seed's file (no matrix would be quantised)
            out[kind] = {"type": found[0]["type"], "refused": refused, "seeds": refused}
        elif measured:
            out[kind] = {
                "type": "/".join(dict.fromkeys(f["type"] for f in measured)),
                "ppl": float(np.mean([f["ppl"] for f in measured])),
                "delta": float(np.mean([f["delta"] for f in measured])),
                "seeds": len(measured),
                "of_f16": float(np.mean([f["mb"] / f["f16_mb"] for f in measured]))
                if "f16_mb" in measured[0]
                else None,
                **({"refused": refused} if refused else {}),
            }
    return out


def _file(kind: str):
    """The text of an arm's shipped KIND column: mean ppl (mean Δ from the fp32 student), the seeds when not all."""

    def text(r: dict) -> str:
        f = r.get("shipped_mean", {}).get(kind)
        if not f:
            not_stock = kind == "gguf" and not r.get("stock") and any(x.get("shipped") for x in r["runs"])
            return "not a stock GPT-2" if not_stock else "-"
        seeds = "" if f["seeds"] == len(r["runs"]) else f", {f['seeds']} of {len(r['runs'])} seeds"
        name = f"{f['type'].upper()} " if kind == "gguf" else ""
        if "ppl" not in f:  # export refused it at every seed that has it: every matrix would stay F16
            return f"{name}refused: no matrix splits into its blocks" + (f" ({seeds[2:]})" if seeds else "")
        size = f", {f['of_f16']:.2f}x F16" if f.get("of_f16") else ""
        refused = f"; refused at {f['refused']} more" if f.get("refused") else ""
        return f"{name}{f['ppl']:.2f} ({f['delta']:+.2%}{size}{seeds}{refused})"

    return text


def _widths(arm: dict) -> str:
    """The arm's shape; each distinct one where its seeds differ (grid's search may pick another per seed)."""
    shapes = list(dict.fromkeys(_shape(r) for r in arm.get("runs", [arm])))
    return " / ".join(shapes)


def _shape(r: dict) -> str:
    w = r["layer_widths"]
    if r.get("stock"):  # one width: blocks x width (of the teacher's), and an MLP that is not 4x it
        mlp = r["stock"].get("mlp_inner")
        return f"{len(w)} x {w[0]}" + (f", MLP {mlp}" if mlp and mlp != 4 * w[0] else "") + " (stock)"
    return "/".join(map(str, w)) if len(set(w)) > 2 else "/".join(map(str, sorted(set(w), reverse=True)))


FIELDS = [
    Column("method", "method"),
    Column("init", "init"),
    Column("params", "params", text=lambda r: f"{r['params'] / 1e6:.2f} M"),
    Column("ratio", "ratio", ".2f"),
    Column("layer_widths", "widths", text=_widths),
    *distil_protocol.ppl_fields(),
    Column("vs_best", "mean / best", ".3f"),
    Column("kld", "KLD to teacher", text=_kld),
    Column("shipped_mean.int4.ppl", "int4 ONNX ppl (Δ fp32)", text=_file("int4")),
    Column("shipped_mean.gguf.ppl", "Q4 GGUF ppl (Δ fp32, size)", text=_file("gguf")),
]
PAPER_ROW = (
    "| paper: CLI-GPT2 / uniform (GPT-2 medium) | ? | 143.8 M | 2.47 | 1024/496 vs 560 | | 204.5 / 571.8 | "
    "1.000 / 2.796 | | | |"
)


if __name__ == "__main__":
    main()
