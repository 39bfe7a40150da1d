"""The student users ship, judged by its shipped files: slim against grid at one size, with seeds.

Each arm is distilled from the reference teacher as paper_ablation.py does (same data, budget and schedule,
sized to --ratio), then exported as a user would: the int4 ONNX file with its embedding/head table at 4 bits
and at 8 (export --int4 [--int4-table-bits 8]) and llama.cpp's Q4_0 and Q4_K_M files (export --gguf), each
scored by the export itself against its fp32 graph (or f32 GGUF) on the same WikiText-test tokens. A GGUF type
that would hold none of its own tensors is refused by export; the table says so. One run, one machine.

    python benchmarks/shipped_student.py                       # 2 methods x 3 seeds, 500k tokens each (~40 min, 2 cores)
    python benchmarks/shipped_student.py --ratio 4              # the same at ratio 4: shipped_student_4x
    python benchmarks/shipped_student.py --ratio 4 --keep-measured   # add the missing seeds, keep the measured ones
    python benchmarks/shipped_student.py --seeds 0 --tokens 20000 --eval-tokens 4096 --search-steps 2 --out /tmp/ss   # smoke

Writes RESULTS/NAME.json, .md, .csv and .jsonl after every arm (RESULTS defaults to benchmarks/results; NAME is
shipped_student at ratio 2.47, shipped_student_<ratio>x at any other, the students under runs/NAME).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import distil_protocol
from paper_ablation import _finished

from clidep.bench.writer import Column
from clidep.errors import NoMatrixOfType


def main() -> None:
    ap = distil_protocol.parser(__doc__.splitlines()[0], "shipped_student")
    ap.add_argument("--ratio", type=float, default=2.47)
    ap.add_argument("--methods", default="slim,grid")
    ap.add_argument("--search-steps", type=int, default=16, help="grid: distillation steps per candidate")
    ap.add_argument("--check-tokens", type=int, default=8192, help="tokens each export scores its files on")
    ap.add_argument(
        "--keep-measured",
        action="store_true",
        help="keep the runs RESULTS/NAME.json already holds (each with the commit it was measured at) whose "
        "student is still the finished one under --work; measure only the others",
    )
    a = ap.parse_args()
    a.name = name(a.ratio)
    if a.work == ap.get_default("work"):
        a.work = str(Path(a.work).with_name(a.name))

    from clidep.commands.compress import compress

    setup = distil_protocol.start(a)
    target = round(setup["teacher"]["params"] / a.ratio)
    rows, measured = [], _measured(a) if a.keep_measured else {}
    # Seed by seed, every method inside: an interrupted run compares the methods on the seeds it finished.
    for method, seed in [(m, s) for s in distil_protocol.seeds(a) for m in a.methods.split(",")]:
        out = Path(a.work) / f"{method}-s{seed}"
        if (method, seed) in measured and _finished(out, method, seed, a.tokens, a.ratio):
            rows.append({**measured[method, seed], "kld": distil_protocol.kld(a, str(out))})  # this run's
            _write(a, setup, rows)
            continue
        started = time.perf_counter()
        sizing = dict(params=target, **({"search_steps": a.search_steps} if method == "grid" else {}))
        r = _finished(out, method, seed, a.tokens, a.ratio) or compress(
            a.teacher, out, method=method, **sizing, **distil_protocol.train_settings(a, seed)
        )
        rows.append(
            {
                "method": method,
                "seed": seed,
                "params": r["student_params"],
                "shape": _shape(out),
                "ppl": distil_protocol.score(a, str(out))["ppl"],
                "kld": distil_protocol.kld(a, str(out)),
                **_shipped(out, a.check_tokens),
                "wall_s": round(time.perf_counter() - started, 1),
                "git_sha": setup["provenance"]["git_sha"],
            }
        )
        distil_protocol.log(f"{method}/seed {seed}: {rows[-1]}")
        _write(a, setup, rows)


def _measured(a) -> dict[tuple[str, int], dict]:
    """The runs RESULTS/NAME.json holds, by (method, seed), each carrying the commit it was measured at."""
    import json

    path = Path(a.out) / f"{a.name}.json"
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    runs = [run for arm in record["arms"] for run in arm["runs"]]
    return {(r["method"], r["seed"]): {"git_sha": record["git_sha"], **r} for r in runs}


def name(ratio: float) -> str:
    """The results' name at RATIO: the paper's ratio keeps the first table's name, any other says its ratio."""
    return "shipped_student" if ratio == 2.47 else f"shipped_student_{ratio:g}x"


def _shape(student: Path) -> str:
    """A stock student's shape as config.json says it: blocks x width (heads x head size), MLP width."""
    import json

    c = json.loads((student / "config.json").read_text())
    inner = c.get("n_inner") or 4 * c["n_embd"]
    return f"{c['n_layer']} x {c['n_embd']} ({c['n_head']} x {c['n_embd'] // c['n_head']}), MLP {inner}"


def _shipped(student: Path, tokens: int) -> dict:
    """The shipped files' figures: int4 ONNX at both table widths, Q4_0 and Q4_K_M (or why export refused it)."""
    from clidep.commands.export import export_artifact

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for table_bits, gguf_type in ((4, "q4_0"), (8, "q4_k_m")):
            common = dict(int4=True, int4_table_bits=table_bits, allow_gate_miss=True, genai=False, ppl_tokens=tokens)
            dst = Path(tmp) / f"t{table_bits}"
            try:
                manifest = export_artifact(student, dst, gguf=True, gguf_types=gguf_type, overwrite=True, **common)
                g = next(f for f in manifest.gguf["files"] if f["type"] == gguf_type)
                out[gguf_type] = {
                    k: g[k] for k in ("size_bytes", "ppl_delta", "matrices", "matrices_of_type", "float_matrices")
                }
            except NoMatrixOfType as exc:  # a type that would hold none of its own tensors
                out[gguf_type] = {"refused": str(exc)}
                manifest = export_artifact(student, dst, overwrite=True, **common)
            fp32, int4 = manifest.variants
            out["fp32_onnx_ppl"] = fp32.ppl
            out[f"int4_table{table_bits}"] = {
                "size_bytes": int4.size_bytes,
                "ppl_delta": int4.ppl_delta,
                "greedy_agreement": int4.greedy_agreement,
                "linear_layers_quantized": int4.extra.get("linear_layers_quantized"),
            }
    return out


def _write(a, setup: dict, rows: list[dict]) -> None:
    import numpy as np

    arms = []
    for method in dict.fromkeys(r["method"] for r in rows):
        runs = [r for r in rows if r["method"] == method]

        def stat(get, runs=runs):
            vals = [get(r) for r in runs]
            vals = [v for v in vals if v is not None]
            if not vals:
                return None
            return [float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0]

        arms.append(
            {
                "method": method,
                "shape": " / ".join(dict.fromkeys(r["shape"] for r in runs)),  # grid may pick another per seed
                "params": runs[0]["params"],
                "seeds": [r["seed"] for r in runs],
                "ppl": stat(lambda r: r["ppl"]),
                "kld": stat(lambda r: r.get("kld", {}).get("kld_mean")),
                "top1": stat(lambda r: r.get("kld", {}).get("top1")),
                "int4_table4": stat(lambda r: r["int4_table4"]["ppl_delta"]),
                "int4_table8": stat(lambda r: r["int4_table8"]["ppl_delta"]),
                "int4_table4_mb": runs[0]["int4_table4"]["size_bytes"] / 1e6,
                "int4_table8_mb": runs[0]["int4_table8"]["size_bytes"] / 1e6,
                "int4_quantized": runs[0]["int4_table4"]["linear_layers_quantized"],
                "q4_0": stat(lambda r: r["q4_0"].get("ppl_delta")),
                "q4_0_mb": runs[0]["q4_0"].get("size_bytes", 0) / 1e6,
                "q4_0_float": f"{runs[0]['q4_0'].get('float_matrices', '-')}/{runs[0]['q4_0'].get('matrices', '-')}",
                "q4_k_m": stat(lambda r: r["q4_k_m"].get("ppl_delta")),
                "q4_k_m_refused": runs[0]["q4_k_m"].get("refused"),
                "runs": runs,
            }
        )
    result = {
        "teacher": {"path": a.teacher, **setup["teacher"]},
        "arms": arms,
        "protocol": {
            **distil_protocol.protocol(a, setup["teacher"]),
            "seeds": sorted({r["seed"] for r in rows}),  # those finished: an interrupted run says so
            "measured_at": sorted({r["git_sha"] for r in rows if "git_sha" in r}),
            "ratio": a.ratio,
            "check_tokens": a.check_tokens,
            "kld_tokens": distil_protocol.KLD_TOKENS,
        },
    }
    distil_protocol.write(a, a.name, setup, result, title(result), FIELDS)


def _pm(x, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x[0]:+.2%} ± {x[1]:.2%}" if pct else f"{x[0]:.2f} ± {x[1]:.2f}"


def _gguf_cell(arm: dict, kind: str, block: str) -> str:
    """A GGUF type's Δppl over the seeds whose file export wrote, saying in how many seeds it refused one
    (a student whose rows do not split into blocks of BLOCK holds no tensor of that type)."""
    written = sum("ppl_delta" in run[kind] for run in arm["runs"])
    if not written:
        return f"refused: no row of {block}"
    refused = len(arm["runs"]) - written
    return _pm(arm[kind], True) + (f" ({written} seed{'s' * (written > 1)}; refused in {refused})" if refused else "")


def title(result: dict) -> str:
    p = result["protocol"]
    return (
        f"{distil_protocol.teacher_line(result)} Students at ratio {p['ratio']}, {p['tokens_per_arm']:,} distillation "
        f"tokens, seeds {p['seeds']}; each shipped file's Δppl against its own fp32 graph (GGUF: f32 file) on "
        f"{p['check_tokens']:,} WikiText-test tokens, as export scores it (mean ± sd over seeds)."
        + _kld_line(p)
        + _measured_at(result)
    )


def _kld_line(p: dict) -> str:
    if "kld_tokens" not in p:
        return ""
    return (
        f" KLD to teacher: the fp32 student's next-token distributions against the teacher's on "
        f"{p['kld_tokens']:,} WikiText-test tokens (context 256, stride 128; nats, mean over tokens), with top-1 "
        "agreement, measured in this run for every seed."
    )


def _measured_at(result: dict) -> str:
    """Which commit measured which seeds' runs (training, perplexity, shipped files), where kept runs say so
    (--keep-measured)."""
    shas = result["protocol"].get("measured_at", [])
    if not shas:
        return ""
    runs = [run for arm in result["arms"] for run in arm["runs"]]
    parts = [f"seeds {sorted({r['seed'] for r in runs if r.get('git_sha') == sha})} at git {sha}" for sha in shas]
    return f" Runs measured: {'; '.join(parts)}."


FIELDS = [
    Column("method", "method"),
    Column("shape", "shape"),
    Column("params", "params", text=lambda r: f"{r['params'] / 1e6:.2f} M"),
    Column("ppl", "fp32 ppl", text=lambda r: _pm(r["ppl"])),
    Column(
        "kld",
        "KLD to teacher",
        text=lambda r: "-" if r.get("kld") is None else f"{r['kld'][0]:.4f} ± {r['kld'][1]:.4f}",
    ),
    Column("top1", "top-1 vs teacher", text=lambda r: "-" if r.get("top1") is None else f"{r['top1'][0]:.1%}"),
    Column("int4_table4", "int4 Δppl (4-bit table)", text=lambda r: f"{_pm(r['int4_table4'], True)}"),
    Column("int4_table8", "int4 Δppl (8-bit table)", text=lambda r: f"{_pm(r['int4_table8'], True)}"),
    Column(
        "int4_table4_mb",
        "int4 MB (4 / 8-bit table)",
        text=lambda r: f"{r['int4_table4_mb']:.1f} / {r['int4_table8_mb']:.1f}",
    ),
    Column("int4_quantized", "int4 linear layers quantised"),
    Column("q4_0", "Q4_0 Δppl", text=lambda r: _gguf_cell(r, "q4_0", "32")),
    Column("q4_0_mb", "Q4_0 MB", text=lambda r: f"{r['q4_0_mb']:.1f}"),
    Column("q4_0_float", "Q4_0 matrices left F16"),
    Column(
        "q4_k_m",
        "Q4_K_M Δppl",
        text=lambda r: _gguf_cell(r, "q4_k_m", "256"),
    ),
]


if __name__ == "__main__":
    main()
