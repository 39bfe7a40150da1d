"""The ``clidep`` command line: a thin Typer map onto the commands in clidep/commands/, and the process
around them (quiet libraries, signals, a closed stdout, the address-space check).

Heavy imports (torch, transformers, onnxruntime) happen inside command bodies so that
``clidep --help`` stays instant. Every ``ClidepError`` becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Annotated

import typer

from clidep.bench.config import BenchConfig
from clidep.commands import analyze, bench, compress, demo, devices, export, generate
from clidep.commands import eval as eval_
from clidep.compress.config import AnalyzeConfig, CompressConfig
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

# Each command's options come from its typed config; its arguments, docstring (the --help) and printing from
# its module in clidep/commands/.
for name, config, module in (
    ("eval", EvalConfig, eval_),
    ("analyze", AnalyzeConfig, analyze),
    ("compress", CompressConfig, compress),
    ("export", ExportConfig, export),
    ("generate", GenerateConfig, generate),
    ("bench", BenchConfig, bench),
    ("devices", None, devices),  # no options of its own: one flag, declared on its function
    ("demo", demo.DemoConfig, demo),
):
    if config is None:
        app.command(name=name)(module.command)
    else:
        typer_command(app, name, config, command_parameters(module.command), module.command)


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
    # torchao (the executorch extra), which transformers imports whenever it is installed, warns of every CUDA
    # kernel library a CPU-only torch cannot load, and its enums trip a deprecation note in torch's pytree.
    for name in (
        "",
        "onnxruntime",
        "onnxruntime.quantization.matmul_nbits_quantizer",
        "torchao",
        "torch.utils._pytree",
    ):
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
    soft = _address_space()
    if argv and argv[0] in LOADING_COMMANDS and "--help" not in argv and soft is not None:
        if soft < ADDRESS_SPACE_FLOOR:
            raise ClidepError(
                f"the address-space limit (ulimit -v) is {soft / 2**20:,.0f} MiB; clidep's libraries map ~1.3 GB "
                f"before any model and abort without a message where a mapping fails: allow at least "
                f"{ADDRESS_SPACE_FLOOR >> 20:,} MiB (ulimit -v unlimited)"
            )


def _address_space() -> int | None:
    """The process's address-space limit (ulimit -v) in bytes; None where there is none."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def _address_space_note() -> str:
    soft = _address_space()
    return "" if soft is None else f" (the address-space limit, ulimit -v, is {soft / 2**20:,.0f} MiB)"


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 2
