"""``clidep demo``: the whole pipeline, offline, on the tiny GPT-2 that ships with clidep.

analyze -> compress (CLI, then a uniform bottleneck of the same size) -> export --int8 (teacher,
CLI, uniform) -> bench on host, then one comparison table. The embedded model was trained on
the standard library's documentation strings (``benchmarks/train_demo_model.py``), and the
demo trains and evaluates on the same kind of text, so it needs no download and no shared data.
``--model`` / ``--data`` run the same steps on a real checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from clidep.options import Options, option, resolve
from clidep.progress import say

EMBEDDED = Path(__file__).resolve().parents[1] / "demo_model"  # package data, beside the commands


@dataclass(frozen=True)
class DemoConfig(Options):
    """What the demo runs on, and how far it trains."""

    model: str | None = option(None, "A GPT-2 checkpoint instead of the embedded tiny model.")
    data: str | None = option(None, "Training text (default: python-docs with the embedded model, else wiki-en).")
    eval_data: str | None = option(None, "Evaluation text (default: python-docs-valid, else wikitext-test).")
    ratio: float = option(2.0, "Compression ratio of the CLI student.", above=1)
    steps: int = option(150, "Distillation steps per student (16 x 128 tokens each).", low=1)


class _Steps:
    """The demo's steps, each announced on LOG and timed (seconds, by name)."""

    def __init__(self, log):
        self.log, self.seconds = log, {}

    def __call__(self, name: str, fn):
        self.log(f"[demo] {name} ...")
        t = time.perf_counter()
        result = fn()
        self.seconds[name] = round(time.perf_counter() - t, 1)
        return result


# The pipeline read top to bottom, one line per step, each calling a command's own library function.
def demo(out: str | Path = "clidep-demo", config: DemoConfig | None = None, *, log=print, **options) -> dict:
    """Run analyze, compress (CLI and uniform), export --int8 and bench (host) into OUT; return the summary.

    CONFIG (a ``DemoConfig``) or its fields as keywords. Without MODEL the embedded tiny GPT-2 and
    the ``python-docs`` corpus are used. OUT's sub-directories are replaced on every run.
    """
    from clidep.bench.report import write_report as write_bench
    from clidep.commands.eval import evaluate
    from clidep.commands.export import export_artifact
    from clidep.compress.analyze import quick_analysis, write_report

    c = resolve(DemoConfig, config, options)
    out = Path(out)
    embedded = c.model is None
    model = str(EMBEDDED) if embedded else c.model
    data = c.data or ("python-docs" if embedded else None)
    eval_data = c.eval_data or ("python-docs-valid" if embedded else "wikitext-test")
    t0, step = time.perf_counter(), _Steps(log)
    write_report(step("analyze", lambda: quick_analysis(model, "all", data=eval_data)), out / "analyze")
    cli, uni = _compress(model, out, c, (data, eval_data), step, log)
    sources = {"teacher": model, "cli": out / "cli", "uniform": out / "uniform"}
    exports = {name: out / f"{name}-onnx" for name in sources}
    for name, src in sources.items():
        step(
            f"export {name}",
            lambda src=src, name=name: export_artifact(
                str(src), exports[name], int8=True, overwrite=True, ppl_data=eval_data, ppl_tokens=0
            ),
        )
    evals = {name: step(f"eval {name}", lambda src=src: evaluate(src, data=eval_data)) for name, src in sources.items()}
    bench_report = step("bench host", lambda: _bench(exports, eval_data, log))
    write_bench(bench_report, out / "bench")
    summary = _summary(out, cli, uni, (eval_data, evals), bench_report, exports)
    return {**summary, "timings_s": step.seconds, "seconds": round(time.perf_counter() - t0, 1)}


def _compress(model: str, out: Path, c: DemoConfig, texts: tuple, step: _Steps, log) -> tuple[dict, dict]:
    """The CLI student at C's ratio and the uniform one matched to its size, trained on TEXTS (data, eval data)."""
    from clidep.commands.compress import compress

    data, eval_data = texts
    common = dict(
        data=data,
        val_data=eval_data,
        steps=c.steps,
        batch_size=16,
        seq_len=128,
        eval_every=max(1, c.steps // 3),
        save_every=c.steps,
        overwrite=True,
        log=log,
    )
    cli = step(
        "compress cli",
        lambda: compress(model, out / "cli", method="cli", ratio=c.ratio, protect=str(out / "analyze"), **common),
    )
    uni = step(
        "compress uniform", lambda: compress(model, out / "uniform", method="uniform", match=str(out / "cli"), **common)
    )
    return cli, uni


def _bench(exports: dict, eval_data: str, log) -> dict:
    """The two students' exports benched on this host against the teacher's, perplexity on EVAL_DATA included."""
    from clidep.commands.bench import bench
    from clidep.hardware import devices

    return bench(
        [str(exports["cli"]), str(exports["uniform"])],
        devices.load("host"),
        baseline=str(exports["teacher"]),
        prompt_lens="32,128",
        gen=64,
        ppl=True,
        ppl_tokens=0,
        ppl_data=eval_data,
        log=log,
    )


def _summary(out: Path, cli: dict, uni: dict, scored: tuple, bench_report: dict, exports: dict) -> dict:
    """The demo's table (one row per model: size, fp32 perplexity, the int8 file's figures in clidep's
    runner, and how far it answers from the teacher's fp32 graph: KLD and top-1 agreement), the students'
    shapes, the evaluation protocol (SCORED: the text, and each model's eval) and where each artifact is."""
    eval_data, evals = scored
    rows = []
    for name, params in (
        ("teacher", cli["teacher_params"]),
        ("cli", cli["student_params"]),
        ("uniform", uni["student_params"]),
    ):
        # clidep's runner: the ONNX Runtime GenAI row of the same precision scores no perplexity
        variants = {
            r["precision"]: r
            for r in bench_report["models"]
            if r["name"] == f"{name}-onnx" and r["runtime"] == "clidep" and "error" not in r
        }
        int8 = next((r for p, r in variants.items() if p.startswith("int8")), {})
        rows.append(
            {
                "model": name,
                "params": params,
                "ratio": cli["teacher_params"] / params,
                "ppl": evals[name].ppl,
                "int8_mb": int8.get("size_bytes", 0) / 1e6,
                "int8_ppl": int8.get("ppl"),
                "int8_decode_ms": int8.get("decode_ms_p50"),
                "int8_peak_rss_mb": int8.get("peak_rss_mb"),
                # does it still answer as the teacher does: bench --baseline's KLD from the teacher's fp32 graph
                "int8_kld": int8.get("vs_baseline", {}).get("kld_mean"),
                "int8_top1": int8.get("vs_baseline", {}).get("top1"),
            }
        )
    return {
        "rows": rows,
        "protected": cli["protected"],
        "layer_widths": {"cli": cli["layer_widths"], "uniform": uni["layer_widths"]},
        "eval": {
            "data": eval_data,
            "context": evals["teacher"].context,
            "stride": evals["teacher"].stride,
            "tokens": evals["teacher"].tokens,
        },
        "distillation_tokens": cli["tokens_trained"],
        "artifacts": {
            "analysis": str(out / "analyze"),
            "cli": str(out / "cli"),
            "uniform": str(out / "uniform"),
            **{f"{k}_onnx": str(v) for k, v in exports.items()},
            "bench": str(out / "bench"),
        },
    }


def command(
    out: Annotated[
        Path, typer.Option(help="Working directory for every artifact (its sub-directories are replaced).")
    ] = Path("clidep-demo"),
    *,
    options,
) -> None:
    """Run the whole job offline: analyze, compress (CLI and uniform), export --int8 and bench on this machine.

    By default on the tiny GPT-2 that ships with clidep (trained on the standard library's
    documentation strings); --model and --data run it on a real checkpoint.
    """
    from rich.console import Console
    from rich.table import Table

    result = demo(out, options, log=say)
    ev = result["eval"]
    table = Table(
        title=f"clidep demo: ppl on {ev['data']} ({ev['tokens']:,} tokens, context {ev['context']}, stride {ev['stride']}); "
        f"int8 decode measured on this machine"
    )
    for col in (
        "model",
        "params",
        "ratio",
        "ppl (torch fp32)",
        "int8 MB",
        "int8 ppl (ONNX)",
        "int8 decode ms/token",
        "int8 peak RSS MB",
        "int8 KLD vs teacher",
        "top-1 vs teacher",
    ):
        table.add_column(col, justify="right")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in result["rows"]:
        table.add_row(
            r["model"],
            f"{r['params']:,}",
            f"{r['ratio']:.2f}",
            f"{r['ppl']:.2f}",
            f"{r['int8_mb']:.2f}",
            fmt(r["int8_ppl"], ".2f"),
            fmt(r["int8_decode_ms"], ".2f"),
            fmt(r["int8_peak_rss_mb"], ".0f"),
            fmt(r["int8_kld"], ".3f"),
            fmt(r["int8_top1"], ".1%"),
        )
    console = Console(width=max(Console().width, 140))
    console.print(table)
    console.print(
        f"protected blocks {result['protected']}; widths cli {result['layer_widths']['cli']}, "
        f"uniform {result['layer_widths']['uniform']}; {result['distillation_tokens']:,} distillation tokens each"
    )
    for name, path in result["artifacts"].items():
        console.print(f"  {name:<12} {path}")
    console.print(f"done in {result['seconds']:.0f} s: {result['timings_s']}")
