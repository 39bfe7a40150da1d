"""BenchConfig: the settings of ``clidep bench``, declared once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clidep.errors import ClidepError
from clidep.options import Options, option
from clidep.runtime.record import RUNTIMES


@dataclass(frozen=True)
class BenchConfig(Options):
    """What each model is measured with, and against what."""

    baseline: str | None = option(None, "Export directory every model is compared with.")
    runtime: tuple[str, ...] = option(
        ("clidep", "genai"),
        "Runtimes, comma-separated: clidep (its ONNX Runtime runner), genai (ONNX "
        "Runtime GenAI's Generator, on an export's genai/ folders, where installed) and "
        "llamacpp (llama.cpp's llama-bench, on an export's gguf/ files: export --gguf) and executorch "
        "(ExecuTorch's runtime, XNNPACK, on an export's executorch/ programs: export --executorch).",
        choices=RUNTIMES,
        items=str,
    )
    prompt_lens: tuple[int, ...] = option(
        (32, 128, 512), "Prompt lengths for prefill, comma-separated.", low=1, items=int
    )
    depth: tuple[int, ...] = option(
        (32,),
        "Context depths: decode is timed after a prompt of each length, comma-separated; the "
        "first is the headline figure (decode slows as the cache grows: try 32,256,512,960).",
        low=1,
        items=int,
    )
    gen: int = option(
        128, "Decoded tokens timed after 8 warm-up tokens, per depth and repetition (tgGEN; 64 or more).", low=64
    )
    reps: int = option(5, "Repetitions of every test: tokens/s is reported as mean ± sd over them.", low=1)
    threads: tuple[int, ...] | None = option(
        None,
        "ONNX Runtime threads, comma-separated for a sweep (one row each) "
        "(default: the profile's, within this machine's cores).",
        low=1,
        items=int,
    )
    ppl: bool = option(
        False,
        "Also measure perplexity (on --ppl-data) through each file's runtime, and with --baseline each file's KL "
        "divergence and top-1 agreement against the baseline's fp32 graph on the same tokens.",
    )
    ppl_tokens: int = option(32768, "Tokens for --ppl (0: the whole text).", low=0)
    ppl_data: str = option("wikitext-test", "Text for --ppl.")
    remote: str | None = option(None, "USER@HOST: run on the real device over ssh (measured, not projected).")
    remote_python: str = option(
        "python3",
        "The device's Python for --remote (e.g. a virtual environment's bin/python) with numpy and onnxruntime.",
    )
    ssh_config: str | None = option(
        None, "An ssh_config file for --remote (port, key, user, jump host), given to ssh and scp as -F."
    )
    yes: bool = option(False, "Run even when the run's estimated duration exceeds 2 hours (it is printed).")
    memory_runs: int = option(
        1,
        "Runner processes per model whose peak memory is taken: the median is reported, every sample kept (a single peak of a large model can move by hundreds of MB).",
        low=1,
    )

    def check(self) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if self.threads and not self.remote and max(self.threads) > cores:
            raise ClidepError(
                f"--threads {max(self.threads)} exceeds this machine's {cores} cores (more threads "
                "than cores only contend; a remote device's own count goes with --remote)"
            )
        if self.ssh_config and not Path(self.ssh_config).is_file():
            raise ClidepError(f"--ssh-config '{self.ssh_config}' is not a file")
