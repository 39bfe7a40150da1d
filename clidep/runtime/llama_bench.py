"""llama-bench, llama.cpp's own timer, run on a GGUF file with bench's tests (ppN, tgGEN after each depth),
its JSON read into clidep's one record (runtime/record.py): here or on a device with its own build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from clidep.errors import Unavailable
from clidep.runtime.llamacpp import BUILD_HINT, VERSION, build_dir


def llama_bench() -> Path:
    """llama-bench: CLIDEP_LLAMA_BENCH, else the cached build's, else one on PATH (a device's own build under
    bench --remote); Unavailable where there is none."""
    given = os.environ.get("CLIDEP_LLAMA_BENCH")
    if given:
        return Path(given)
    built = build_dir() / "bin" / "llama-bench"
    if built.is_file():
        return built
    found = shutil.which("llama-bench")
    if found:
        return Path(found)
    raise Unavailable(
        f"no llama-bench here (CLIDEP_LLAMA_BENCH unset, no build in {built.parent}, none on PATH): {BUILD_HINT}"
    )


def run_bench(
    gguf: Path, threads: int, reps: int, tests: list[list[str]], cache: str | None = None
) -> tuple[list, dict]:
    """llama-bench's JSON records of TESTS (each a list of its -p/-n/-d arguments) on GGUF, REPS repetitions, and
    {"repack", "peak_rss_mb" (the largest llama-bench process), "flags"}: repacked weights first (the kernels
    GGML_NATIVE builds for this CPU), plain ones where repacking fails. CACHE: None for llama.cpp's default
    (an f16 cache, flash attention where it chooses), or a cache type (q8_0) for keys and values, with flash
    attention on, which a quantised V cache requires."""
    failure = ""
    for repack in (1, 0):
        flags = ["-t", str(threads), "-r", str(reps), "--repack", str(repack)]
        flags += ["-ctk", cache, "-ctv", cache, "-fa", "on"] if cache else []
        runs, peak = [], 0.0
        for test in tests:
            code, out, err, rss = _run_measured([str(llama_bench()), "-m", str(gguf), "-o", "json", *flags, *test])
            if code:
                failure = (err.strip().splitlines() or [f"exit {code}"])[-1]
                break
            peak = max(peak, rss)
            runs += json.loads(out)
        else:
            return runs, {"repack": bool(repack), "peak_rss_mb": peak, "flags": flags}
    raise Unavailable(f"llama-bench failed on {gguf.name} with and without repacking: {failure}")


def _run_measured(cmd: list[str]) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, peak resident MB) of CMD, its own peak (wait4), not any other child's."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        out.seek(0)
        err.seek(0)
        kb = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)  # Linux reports KB, macOS bytes
        return proc.returncode, out.read(), err.read(), kb / 1024


def record(
    gguf: Path, prompt_lens: list[int], gen: int, threads: int, depths: list[int], reps: int, cache: str | None = None
) -> dict:
    """clidep bench's record (runtime/record.py) of GGUF through llama-bench: ppN for each of PROMPT_LENS and
    for the first depth (the time to the first token there), tgGEN after each of DEPTHS, with CACHE as
    run_bench takes it. llama-bench times a whole test, not a step, so the decode samples are each
    repetition's mean ms per token. Two tests: with -d, llama-bench runs the prompt test at every depth
    too, and a prompt of 512 after 952 tokens would pass GPT-2's 1,024 positions."""
    import numpy as np

    lens = list(dict.fromkeys([*prompt_lens, depths[0]]))
    runs, how = run_bench(
        gguf,
        threads,
        reps,
        [["-p", ",".join(map(str, lens)), "-n", "0"], ["-p", "0", "-n", str(gen), "-d", ",".join(map(str, depths))]],
        cache,
    )
    pp = {r["n_prompt"]: r for r in runs if r["n_prompt"] and not r["n_gen"]}
    tg = {r.get("n_depth", 0): r for r in runs if r["n_gen"]}
    pp_ms = {n: [ns / 1e6 for ns in r["samples_ns"]] for n, r in pp.items()}
    tg_ms = {d: [ns / 1e6 / gen for ns in r["samples_ns"]] for d, r in tg.items()}
    head = tg_ms[depths[0]]
    first = runs[0]
    return {
        "reps": reps,
        "gen": gen,
        "threads": threads,
        "load_s": None,
        "prefill_ms": {str(n): float(np.median(pp_ms[n])) for n in prompt_lens},
        "prefill_ms_samples": {str(n): pp_ms[n] for n in prompt_lens},
        "pp_tps": {str(n): _spread(pp[n]) for n in prompt_lens},
        "ttft_ms": float(np.median(pp_ms[depths[0]])),
        "ttft_ms_samples": pp_ms[depths[0]],
        "decode_ms_p50": float(np.percentile(head, 50)),
        "decode_ms_p90": float(np.percentile(head, 90)),
        "decode_ms_samples": head,
        "decode_ms_at": {str(d): float(np.median(tg_ms[d])) for d in depths},
        "tg_tps": {str(d): _spread(tg[d]) for d in depths},
        "tokens_per_s": 1e3 / float(np.percentile(head, 50)),
        "decode_context": depths[0] + gen // 2,
        "ppl": None,
        "peak_rss_mb": how["peak_rss_mb"],
        "runner": {
            "llama_cpp": {
                "version": VERSION,
                "build": first.get("build_commit"),
                "bench": str(llama_bench()),
                "repack": how["repack"],
                "flags": how["flags"],
                "type_k": first.get("type_k"),
                "type_v": first.get("type_v"),
                "flash_attn": first.get("flash_attn"),
                "cpu": first.get("cpu_info"),
                "decode_samples": "each repetition's mean ms/token",
            }
        },
    }


def _spread(r: dict) -> dict:
    """llama-bench's tokens/s: mean, sd, samples."""
    return {"mean": float(r["avg_ts"]), "sd": float(r["stddev_ts"]), "samples": [float(x) for x in r["samples_ts"]]}


def build_commit() -> str:
    """The llama.cpp commit the tools were built from (llama-bench's build_commit)."""
    proc = subprocess.run([str(llama_bench()), "--version"], capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith("version:") and "commit " in line:  # "version: 0.5.0-dev (build 1, commit 0c1e570)"
            return line.split("commit ")[-1].rstrip(")").strip()
    return "unknown"
