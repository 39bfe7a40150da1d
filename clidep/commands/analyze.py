"""``clidep analyze``: every block's importance scored (compress/analyze.py), written as importance.json and
importance.png under OUT's lock, and printed as a table."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from clidep.commands.arguments import ModelArg
from clidep.progress import say


def command(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="Directory for importance.json and importance.png.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT (once the new report is complete).")
    ] = False,
    *,
    options,
) -> None:
    """Score every block's importance (NTK trace, gradient norm, block influence, ablation) and pick the critical layers.

    The NTK score of block l is tr(J_l J_l^T) per token, J_l the Jacobian of the log-probabilities
    with respect to the block's parameters, estimated with Hutchinson probes.
    """
    from clidep.compress.analyze import analyze as run
    from clidep.compress.analyze import write_report
    from clidep.files import check_output, write_dir
    from clidep.locks import write_lock

    with write_lock(out, log=say):
        check_output(out, [model, options.data], overwrite=overwrite)
        report = run(model, options)
        names = [p.name for p in write_dir(out, lambda tmp: write_report(report, tmp))]
    json_path, png_path = (out / n for n in names)
    print_table(report)
    print(f"wrote {json_path} and {png_path}", file=sys.stderr)


def print_table(report: dict) -> None:
    """The per-block scores as a rich table on stdout, then the rule and the layer-0 ratio."""
    from rich.console import Console
    from rich.table import Table

    def fmt(v, spec=".3g"):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    table = Table(title=f"block importance of {report['model']} ({report['calibration']['data']})")
    for col in ("block", "width", "ntk", "rse", "ntk/param", "grad", "BI", "Δppl skipped", "critical"):
        table.add_column(col, justify="right")
    for s in report["scores"]:
        table.add_row(
            str(s["layer"]),
            str(s["width"]),
            fmt(s["ntk"]),
            fmt(s["ntk_rse"], ".0%"),
            fmt(s["ntk_per_param"]),
            fmt(s["grad"]),
            fmt(s["bi"]),
            fmt(s["ablation_dppl"]),
            "yes" if s["layer"] in report["critical_layers"] else "",
        )
    if report["embedding"]:
        e = report["embedding"]
        table.add_row("emb", "", fmt(e["ntk"]), fmt(e["ntk_rse"], ".0%"), fmt(e["ntk_per_param"]), "", "", "", "")
    console = Console(width=max(Console().width, 110))  # piped output defaults to 80 columns and would truncate
    console.print(table)
    console.print(f"rule: {report['rule']}")
    if report["layer0_ratio"] is not None:
        console.print(
            f"layer-0 NTK / max of the other blocks: {report['layer0_ratio']:.2f}x (paper: 3.6 / 0.054 = 67x)"
        )
