"""``clidep bench``: latency, memory and perplexity of ONNX models on a device profile.

Each model variant runs in its own process (``clidep.runtime.benchrun``: numpy + onnxruntime only).
On ``host`` every figure is measured. On any other profile the host measurement is
**projected** with a stated model, and labelled so everywhere:

* decode is bound by memory bandwidth: device ms/token = host ms/token x host GB/s / device GB/s
  (the same fraction of the bandwidth roofline as measured on the host);
* prefill is bound by arithmetic: device ms = host ms x host fp32 GFLOP/s / device fp32 GFLOP/s
  (the int8/int4 speed-ups measured on the host are assumed to carry over);
* a model fits when its peak resident memory is within the device's usable RAM.

With ``--remote USER@HOST`` the runner and the models are copied over ssh and run on the device:
measured, not projected. This module finds and checks the variants and runs the loop over rows;
the projection is ``projection.py``, where a runner runs ``transport.py``, the host probe
``host_speed.py``, and what is written ``report.py``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from clidep.bench import measure
from clidep.bench.config import BenchConfig
from clidep.bench.models import PAYLOAD_RUNTIMES, export_folder, model_files
from clidep.bench.provenance import provenance as run_provenance
from clidep.errors import ClidepError
from clidep.files import non_finite
from clidep.hardware.devices import Profile
from clidep.hardware.host_speed import measure_host
from clidep.hardware.transport import check_remote
from clidep.options import resolve
from clidep.progress import say
from clidep.runtime.verify import graph_bytes, reason

PROJECTION = (
    "decode ms/token = host ms/token x host GB/s / device GB/s (the host's fraction of the bandwidth "
    "roofline); prefill ms = host ms x host fp32 GFLOP/s / device fp32 GFLOP/s (the int8/int4 speed-ups "
    "measured on the host assumed to carry over); fits = peak RSS <= the device's usable RAM"
)


def bench(
    models: list[str], device: Profile, config: BenchConfig | None = None, *, timeout: int = 1800, log=print, **options
) -> dict:
    """Benchmark every variant of MODELS (and BASELINE) on DEVICE; returns the report (see write_report).

    Latencies come from the first runner process of each variant; peak memory is the median over
    MEMORY_RUNS processes running the same protocol (``peak_rss_mb_samples`` keeps each one).
    """
    import contextlib

    from clidep.locks import read_lock

    c = resolve(BenchConfig, config, options)
    specs = models + ([c.baseline] if c.baseline else [])
    for s in models:  # one file named for a runtime not asked would give no row at all
        needed = PAYLOAD_RUNTIMES.get(Path(s).suffix)
        if needed and needed not in c.runtime:
            raise ClidepError(f"'{s}' runs in {needed}: add --runtime {needed} (asked: {','.join(c.runtime)})")
    with contextlib.ExitStack() as held:  # no export is replaced while it is measured
        for folder in dict.fromkeys(export_folder(Path(s)) for s in specs):
            held.enter_context(read_lock(folder))
        report = _bench(model_files(specs, log), device, c, timeout, log)
        if c.ppl and c.baseline:
            from clidep.bench.agreement import add_agreement

            add_agreement(report["models"], c, log)
        return report


#: The fields a failed row keeps: what was measured, not what was not.
_ROW_KEYS = ("name", "precision", "runtime", "threads", "file", "size_bytes", "is_baseline")


# The run's provenance and the loop over rows, each row's failure kept as its row (_row).
def _bench(files: list[dict], device: Profile, c: BenchConfig, timeout: int, log) -> dict:
    import onnxruntime

    if c.remote:
        check_remote(c.remote, c.ssh_config, c.remote_python)
    host = measure_host()
    projected = not device.measured and not c.remote
    sweep = c.threads or [
        min(device.threads, host["cores"]) if projected else device.threads if c.remote else host["cores"]
    ]
    measure.check_duration(files, c, sweep, host)
    provenance = {
        **run_provenance(),
        "device": device.name,
        "device_file": device.path,
        "projected": projected,
        "remote": c.remote,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "threads": ",".join(map(str, sweep)),
        "reps": c.reps,
        "llama_cpp": measure.llama_cpp_provenance(c),
    }
    ids_files: dict[Path, Path] = {}  # one tokenisation per export directory, shared by its variants
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(v, rt, n) for v in files for rt in measure.runtimes(c, v, log) for n in sweep]
        where = (device, host, projected, Path(tmp), ids_files)
        rows = [
            {**_row(f, runtime, threads, c, where, timeout, log), "provenance": provenance}
            for f, runtime, threads in runs
        ]
    measure.ratios(rows)
    # An emulated runner (qemu-user: an aarch64 Python on an x86 kernel) checks what runs, not how fast.
    provenance["emulated"] = next(
        (r["runner"]["emulated"] for r in rows if (r.get("runner") or {}).get("emulated")), None
    )
    return {
        "device": device.name,
        "projected": projected,
        "projection": PROJECTION if projected else None,
        "device_profile": {k: v for k, v in vars(device).items()},
        "host_measured": host,
        "provenance": provenance,
        "models": rows,
    }


def _row(f, runtime: str, threads: int, c: BenchConfig, where, timeout: int, log) -> dict:
    """One row: F measured with RUNTIME at THREADS (WHERE: the device, the host, whether projected, a scratch
    folder and the tokenised texts); a failure is the row's error, with what was measured kept."""
    device, host, projected, tmp, ids_files = where
    row = {
        "name": f.name,
        "precision": f.precision,
        "runtime": runtime,
        "threads": threads,
        "file": str(f.file),
        "size_bytes": graph_bytes(f.file),
        "is_baseline": bool(c.baseline) and Path(c.baseline) in (f.dir, f.file),
    }
    try:
        log(f"{f.name} [{f.precision}, {runtime}, {threads} threads] ...")
        if f.missing:
            raise FileNotFoundError(2, f.missing)
        runs = measure.measure_file(f, runtime, c, threads, tmp, ids_files, timeout)
        measure.fill(row, runs, f, device, host, measured_there=bool(c.remote), projected=projected)
        bad = non_finite(row)
        if bad:
            raise ValueError(f"a figure is not finite ({bad}); the device profile or the runner is off")
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
        row = {k: row[k] for k in _ROW_KEYS}
        row["error"] = (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or reason(exc)
        log(f"  failed: {row['error']}")
    return row


def command(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Export directories (every variant), one file of an export (that variant), or .onnx files."
        ),
    ],
    device: Annotated[str, typer.Option(help="Device profile: a name from `clidep devices` or a .toml file.")],
    out: Annotated[
        Path, typer.Option(help="Directory for bench.json, bench.md, bench.csv, bench.jsonl and the plots.")
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT (once the new report is complete).")
    ] = False,
    *,
    options,
) -> None:
    """Measure each model as llama-bench does, each in its own process: prompt processing (ppN) and
    generation after each context depth (tgGEN) in tokens/s, mean ± sd over --reps, per --threads;
    time to first token, per-token decode p50/p90, load time, peak memory and perplexity. On a
    profile other than host, latencies are projected (and labelled so)."""
    from clidep.bench.report import markdown, write_report
    from clidep.files import check_output, write_dir
    from clidep.hardware import devices as profiles
    from clidep.locks import write_lock

    with write_lock(out, log=say):
        check_output(out, [*models, options.baseline], overwrite=overwrite)
        report = bench(models, profiles.load(device), options, log=say)
        if all("error" in r for r in report["models"]):
            print(markdown(report))
            raise ClidepError(f"every model failed (see the table above); {out} was left as it was")
        names = [p.name for p in write_dir(out, lambda tmp: write_report(report, tmp))]
    print("wrote " + ", ".join(str(out / n) for n in names), file=sys.stderr)
    print(markdown(report))  # after the files: a reader that quits early (`| head`) costs no result
