"""``clidep devices``: the device profiles (clidep/hardware/devices.py), listed or shown with their sources."""

from __future__ import annotations

from typing import Annotated

import typer


def command(
    show: Annotated[str | None, typer.Option(help="Print one profile in full, with the source of every fact.")] = None,
) -> None:
    """List the device profiles (clidep/devices/*.toml, and $CLIDEP_DEVICES), or show one with its sources."""
    from rich.console import Console
    from rich.table import Table

    from clidep.hardware import devices as profiles

    console = Console(width=max(Console().width, 110))
    if show:
        p = profiles.load(show)
        table = Table(title=f"{p.name}: {p.description} ({p.path})")
        for col in ("field", "value", "source"):
            table.add_column(col)
        for k in (
            "cores",
            "threads",
            "clock_ghz",
            "ram_gb",
            "usable_ram_fraction",
            "mem_bandwidth_gbs",
            "fp32_gflops",
            "int8_gops",
            "ort_provider",
        ):
            table.add_row(k, str(getattr(p, k)), p.sources.get(k, "measured at bench time" if p.measured else ""))
        if p.arm_check:
            table.add_row("arm_check", p.arm_check, p.sources["arm_check"])
        console.print(table)
        if p.arm_check:
            console.print(
                f"checked on aarch64: what every export computes there (logits, next tokens, perplexity, "
                f"ONNX Runtime GenAI), on an emulated {p.arm_check} with clidep export --check-arm; "
                "projected: every speed figure (bench without --remote), never measured on the device"
            )
        return
    table = Table(title="device profiles")
    for col in ("name", "description", "threads", "RAM GB", "GB/s", "fp32 GFLOP/s", "int8 GOPS"):
        table.add_column(col)
    for name, path in profiles.known().items():
        p = profiles.load(str(path))
        m = p.measured
        table.add_row(
            name,
            p.description,
            str(p.threads),
            f"{p.ram_gb:g}",
            "measured" if m else f"{p.mem_bandwidth_gbs:g}",
            "measured" if m else f"{p.fp32_gflops:g}",
            "-" if m else f"{p.int8_gops:g}",
        )
    console.print(table)
