"""The ``clidep`` command line: a thin Typer map onto the library functions.

Heavy imports (torch, transformers, onnxruntime) happen inside command bodies so that
``clidep --help`` stays instant. Every ``ClidepError`` becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from clidep.bench.config import BenchConfig
from clidep.compress.config import AnalyzeConfig, CompressConfig
from clidep.demo import DemoConfig
from clidep.errors import ClidepError, OutputClosed, Stopped
from clidep.export.config import ExportConfig
from clidep.options import command_parameters, typer_command
from clidep.quality.config import EvalConfig
from clidep.runtime.config import GenerateConfig

app = typer.Typer(
    name="clidep",
    help="Compress GPT-2 by Critical Layer Isolation, export it to ONNX, and benchmark it on edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _log(message: str) -> None:
    """Progress and notices: stderr, so that stdout holds only the result."""
    print(message, file=sys.stderr)


ModelArg = Annotated[str, typer.Argument(help="Model directory or hub id (GPT-2 or clidep).")]


def eval_(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    *,
    options,
) -> None:
    """Perplexity of MODEL (a model directory, or an export scored through ONNX Runtime) on a text with a sliding
    window: exp(mean NLL), every token after the first scored once."""
    from clidep.quality.evaluate import evaluate

    result = evaluate(model, options)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        print(
            f"ppl {result.ppl:.2f} over {result.tokens:,} tokens (context {result.context}, stride {result.stride}) on {result.data}"
        )


typer_command(app, "eval", EvalConfig, command_parameters(eval_), eval_)


def analyze(
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
    from clidep.compress.analyze import print_table, write_report
    from clidep.files import check_output, write_dir
    from clidep.locks import write_lock

    with write_lock(out, log=_log):
        check_output(out, [model, options.data], overwrite=overwrite)
        report = run(model, options)
        names = [p.name for p in write_dir(out, lambda tmp: write_report(report, tmp))]
    json_path, png_path = (out / n for n in names)
    print_table(report)
    print(f"wrote {json_path} and {png_path}", file=sys.stderr)


typer_command(app, "analyze", AnalyzeConfig, command_parameters(analyze), analyze)


def compress(
    teacher: Annotated[str, typer.Argument(help="Teacher: a GPT-2 directory or hub id (full width).")],
    out: Annotated[Path, typer.Option(help="Output: a from_pretrained directory plus compress.json.")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUT from its last checkpoint.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT once the new student is complete.")
    ] = False,
    *,
    options,
) -> None:
    """Build a CLI or uniform-bottleneck student of TEACHER, initialise it, and distil it (Accelerate);
    with layercollapse, MLPs trained towards linear are collapsed into one matrix each.

    Runs on CPU, one GPU or several processes: `accelerate launch -m clidep compress ...`.
    """
    from clidep.compress.pipeline import compress as run

    result = run(teacher, out, options, resume=resume, overwrite=overwrite, log=_log)
    summary = {
        k: result[k]
        for k in (
            "method",
            "student_params",
            "ratio",
            "layer_widths",
            "protected",
            "init",
            "tokens_trained",
            "val_ppl",
            "seconds",
        )
    }
    print(json.dumps(summary))


typer_command(app, "compress", CompressConfig, command_parameters(compress), compress)


def export(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="Artifact directory (ONNX files, tokenizer, manifest.json).")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT once the new artifact is complete.")
    ] = False,
    *,
    options,
) -> None:
    """Export MODEL to one ONNX graph with KV cache, validate it against PyTorch, and optionally quantise it.

    Validation: max |logit diff| <= 1e-4 on batch 1 and a left-padded batch 2 at past length 0
    and > 0, and identical 32-token greedy continuations. The manifest records size, sha256,
    parity and perplexity of every variant.
    """
    from rich.console import Console
    from rich.table import Table

    from clidep.export.artifact import export_artifact

    manifest = export_artifact(model, out, options, overwrite=overwrite, log=_log)
    table = Table(title=f"{out} ({manifest['ppl_protocol']['tokens']:,} tokens of {manifest['ppl_protocol']['data']})")
    for col in ("file", "precision", "MB", "max |Δlogit| vs torch", "ppl", "Δppl", "greedy agreement"):
        table.add_column(col, justify="right")
    for v in manifest["variants"]:
        table.add_row(
            v["file"],
            v["precision"],
            f"{v['size_bytes'] / 1e6:.1f}",
            f"{v['max_abs_logit_diff']:.2e}",
            f"{v['ppl']:.2f}",
            f"{v['ppl_delta']:+.2%}",
            f"{v['greedy_agreement']:.0%}",
        )
    console = Console(width=max(Console().width, 110))
    console.print(table)
    opt = manifest["optimize"]
    console.print(
        f"graph optimisation: {'applied' if opt['applied'] else 'not applied'} ({opt['reason']}); fusions {opt['fusions']}"
    )
    if "kv_cache" in manifest:
        kv = manifest["kv_cache"]
        checked = [
            f"{v['file']} Δppl {v['kv_cache']['ppl_delta']:+.3%}, next token {v['kv_cache']['decode_agreement']:.1%}"
            for v in manifest["variants"]
            if "ppl_delta" in v["kv_cache"]
        ]
        console.print(
            f"KV cache {kv['precision']}{' ' + kv['mode'] if 'mode' in kv else ''} against the same file with an "
            f"fp32 cache: {'; '.join(checked)}"
        )
    if "aarch64" in manifest:
        console.print(_arm_table(manifest["aarch64"]))


def _arm_table(arm: dict):
    """export --check-arm's figures: each variant on each emulated core against x86's run of the same file."""
    from rich.table import Table

    table = Table(
        title=f"on emulated aarch64 ({arm['emulator']}; {arm['ppl_tokens']:,} tokens): what the kernels "
        "compute there, not how fast"
    )
    for col in (
        "file",
        "core",
        "max |Δlogit| vs x86",
        "next token = x86",
        "= x86 fp32",
        "greedy = x86",
        "ppl",
        "Δppl vs x86 fp32",
        "GenAI greedy = x86",
    ):
        table.add_column(col, justify="right")
    for core, c in arm["cores"].items():
        for file, f in c["variants"].items():
            genai = f.get("genai_greedy_match")
            table.add_row(
                file,
                core,
                f"{f['max_abs_logit_diff']:.2e}",
                f"{f['argmax_agreement']:.1%}",
                f"{f['fp32_agreement']:.1%}",
                "yes" if f["greedy_match"] else "no",
                f"{f['ppl']:.2f}",
                f"{f['ppl_delta']:+.2%}",
                "-" if genai is None else "yes" if genai else "no",
            )
    return table


typer_command(app, "export", ExportConfig, command_parameters(export), export)


def generate(
    model: Annotated[Path, typer.Argument(help="Artifact directory from clidep export, or an .onnx file inside one.")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")],
    *,
    options,
) -> None:
    """Continue PROMPT with an exported model through ONNX Runtime (no torch involved)."""
    from clidep.runtime.generate import generate_text

    print(generate_text(model, prompt, options, log=_log))


typer_command(app, "generate", GenerateConfig, command_parameters(generate), generate)


def bench(
    models: Annotated[list[str], typer.Argument(help="Export directories (every variant) or .onnx files.")],
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
    from clidep.bench.benchmark import bench as run
    from clidep.bench.outputs import markdown, write_report
    from clidep.files import check_output, write_dir
    from clidep.hardware import devices as profiles
    from clidep.locks import write_lock

    with write_lock(out, log=_log):
        check_output(out, [*models, options.baseline], overwrite=overwrite)
        report = run(models, profiles.load(device), options, log=_log)
        if all("error" in r for r in report["models"]):
            print(markdown(report))
            raise ClidepError(f"every model failed (see the table above); {out} was left as it was")
        names = [p.name for p in write_dir(out, lambda tmp: write_report(report, tmp))]
    print("wrote " + ", ".join(str(out / n) for n in names), file=sys.stderr)
    print(markdown(report))  # after the files: a reader that quits early (`| head`) costs no result


typer_command(app, "bench", BenchConfig, command_parameters(bench), bench)


@app.command()
def devices(
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


def demo(
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

    from clidep.demo import demo as run

    result = run(out, options, log=_log)
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
        )
    console = Console(width=max(Console().width, 110))
    console.print(table)
    console.print(
        f"protected blocks {result['protected']}; widths cli {result['layer_widths']['cli']}, "
        f"uniform {result['layer_widths']['uniform']}; {result['distillation_tokens']:,} distillation tokens each"
    )
    for name, path in result["artifacts"].items():
        console.print(f"  {name:<12} {path}")
    console.print(f"done in {result['seconds']:.0f} s: {result['timings_s']}")


typer_command(app, "demo", DemoConfig, command_parameters(demo), demo)


@app.callback()
def _root(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="Show the libraries' own progress bars and warnings (loading, exporting, quantising)."
        ),
    ] = False,
) -> None:
    """Compress GPT-2 by Critical Layer Isolation, export it to ONNX, and benchmark it on edge devices."""
    if verbose:
        _set_quiet(False)


def _set_quiet(quiet: bool) -> None:
    """Route transformers' and the hub's progress bars and warnings to a debug level (or back)."""
    import logging
    import os

    level = "error" if quiet else "info"
    # A root handler first, so that the libraries' own logging.basicConfig(level=INFO) calls at
    # import time change nothing.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    os.environ["TRANSFORMERS_VERBOSITY"] = level
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1" if quiet else "0"
    # ONNX Runtime's quantisers and optimizer warn through the root logger and their own (the
    # pre-processing advice, "specify num_heads", the opset bump of int4): errors only, unless --verbose.
    for name in ("", "onnxruntime", "onnxruntime.quantization.matmul_nbits_quantizer"):
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.INFO)
    if "transformers" in sys.modules:  # already imported (in-process callers): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error() if quiet else hf_logging.set_verbosity_info()
        hf_logging.disable_progress_bar() if quiet else hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ARGV (default: sys.argv); every failure a user can cause is one
    ``error:`` line on stderr and exit status 2, never a traceback. Returns the exit status."""
    _set_quiet(True)
    command = typer.main.get_command(app)
    stdout, sys.stdout = sys.stdout, _GuardedStdout(sys.stdout)
    try:
        _check_address_space(sys.argv[1:] if argv is None else argv)
        with _signals_as_interrupts() as received:
            code = command.main(args=argv, prog_name="clidep", standalone_mode=False) or 0
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
        if code == 130 or received:  # typer answers an interrupt with exit status 130, whatever ended the run
            return _stopped(received[-1] if received else signal.SIGINT)
        return code
    except OutputClosed:
        _discard(stdout)
        print(
            "error: standard output was closed before clidep finished printing (its reader quit); "
            "every file the command writes was written first",
            file=sys.stderr,
        )
        return 128 + signal.SIGPIPE
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt) as exc:
        return _stopped(exc.signum if isinstance(exc, Stopped) else signal.SIGINT)
    except ClidepError as exc:
        return _fail(str(exc))
    except MemoryError:
        return _fail(f"out of memory{_address_space_note()}; nothing was written")
    except OSError as exc:
        # Full disks, unwritable places, files that vanish: the system's own words, on one line.
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}")
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `clidep` or `clidep CMD`: the help itself
            print(exc.format_message())
            return 0
        where = f" (see: {exc.ctx.command_path} --help)" if getattr(exc, "ctx", None) is not None else ""
        return _fail(exc.format_message() + where)
    finally:
        sys.stdout = stdout


class _GuardedStdout:
    """sys.stdout while a command runs: a write or flush into a pipe whose reader quit raises OutputClosed."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise OutputClosed from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise OutputClosed from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _discard(stream) -> None:
    """Point STREAM's descriptor at /dev/null, so that the interpreter's last flush of what is still
    buffered for the closed pipe fails quietly instead of printing a traceback."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def _stopped(signum: int) -> int:
    """The line and exit status (128 + the signal's number) of a run ended by Ctrl-C, SIGTERM or SIGHUP."""
    print(
        f"error: stopped by {signal.Signals(signum).name}; nothing was replaced (a compress run stopped after a "
        "checkpoint continues with --resume)",
        file=sys.stderr,
    )
    return 128 + signum


@contextlib.contextmanager
def _signals_as_interrupts():
    """SIGTERM and SIGHUP end the run as Ctrl-C does: every cleanup runs (temporary outputs removed,
    locks released, runner processes killed). Yields the list of signals received; the previous
    handlers come back afterwards."""
    received: list[int] = []

    def stop(signum, frame):
        received.append(signum)
        raise Stopped(signum)

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _is_usage_error(exc: Exception) -> bool:
    """A command-line parse error (missing option, bad value, unknown command).

    Typer raises click's ``UsageError`` family, from click itself or from its own vendored copy
    depending on the release; both carry ``format_message()`` and exit code 2.
    """
    return getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message")


#: The address space (ulimit -v) below which a command is refused before it starts: clidep's libraries
#: (PyTorch, ONNX Runtime, tokenizers) map ~1.3 GB before any model, and the packaged demo model's
#: `export --int8 --int4` needed 1.2-1.35 GB (1.2 aborted in tokenizers' native code, exit 134, no message).
ADDRESS_SPACE_FLOOR = 2 << 30
#: The commands that load models (and so those libraries); devices and --help need neither.
LOADING_COMMANDS = ("compress", "export", "eval", "analyze", "bench", "generate", "demo")


def _check_address_space(argv: list[str]) -> None:
    """ClidepError where ulimit -v leaves a loading command less than ADDRESS_SPACE_FLOOR: native code that
    cannot map memory aborts without a word (and a dead run's lock file stays until the next run)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if argv and argv[0] in LOADING_COMMANDS and "--help" not in argv and soft != resource.RLIM_INFINITY:
        if soft < ADDRESS_SPACE_FLOOR:
            raise ClidepError(
                f"the address-space limit (ulimit -v) is {soft / 2**20:,.0f} MiB; clidep's libraries map ~1.3 GB "
                f"before any model and abort without a message where a mapping fails: allow at least "
                f"{ADDRESS_SPACE_FLOOR >> 20:,} MiB (ulimit -v unlimited)"
            )


def _address_space_note() -> str:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return (
        "" if soft == resource.RLIM_INFINITY else f" (the address-space limit, ulimit -v, is {soft / 2**20:,.0f} MiB)"
    )


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 2
