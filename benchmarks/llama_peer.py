"""llama.cpp as the peer edge users pick: llama-bench built from source, models converted to GGUF.

The source comes from the package registry: the `llama-cpp-python` sdist carries llama.cpp in
`vendor/llama.cpp`. `llama-bench` and `llama-quantize` are built once with cmake (~6 minutes on 2
cores) into a cache outside the repository (CLIDEP_LLAMA_CACHE, default ~/.cache/clidep/llama.cpp);
models are converted with llama.cpp's own `convert_hf_to_gguf.py` (its `gguf-py` rides along in the
sdist) and quantised with `llama-quantize`. Anything missing (cmake, a compiler, the registry)
raises ``Unavailable`` with the reason, which the runtime benchmark prints and records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "0.3.36"  # llama-cpp-python, whose sdist pins the llama.cpp source used here


class Unavailable(Exception):
    """llama.cpp cannot be built or run here; the message says why."""


def cache_dir() -> Path:
    return Path(os.environ.get("CLIDEP_LLAMA_CACHE", Path.home() / ".cache" / "clidep" / "llama.cpp")) / VERSION


def build(log=print) -> Path:
    """The folder holding llama-bench and llama-quantize, built from the sdist if not cached yet."""
    root = cache_dir()
    bin_dir = root / "build" / "bin"
    if (bin_dir / "llama-bench").is_file() and (bin_dir / "llama-quantize").is_file():
        return bin_dir
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        raise Unavailable(f"cannot build llama.cpp: {', '.join(missing)} not found")
    src = _source(root, log)
    log(f"building llama-bench and llama-quantize in {root / 'build'} (~6 min on 2 cores) ...")
    flags = ["-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
             "-DLLAMA_BUILD_SERVER=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    _run(["cmake", "-S", str(src), "-B", str(root / "build"), *flags], "cmake configure")
    _run(["cmake", "--build", str(root / "build"), "--target", "llama-bench", "llama-quantize", "-j", str(os.cpu_count())],
         "cmake build")
    return bin_dir


def _source(root: Path, log) -> Path:
    """vendor/llama.cpp of the llama-cpp-python sdist, downloaded from the package registry once."""
    src = root / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
    if src.is_dir():
        return src
    root.mkdir(parents=True, exist_ok=True)
    log(f"downloading the llama-cpp-python {VERSION} sdist (llama.cpp source) ...")
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={VERSION}",
          "-d", str(root)], "pip download")
    with tarfile.open(root / f"llama_cpp_python-{VERSION}.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return src


def convert(hf_dir: Path, out: Path, kind: str, bin_dir: Path) -> Path:
    """HF_DIR as a GGUF file at OUT: KIND f32 or q8_0 by the converter, q4_0 through llama-quantize from f32."""
    src = cache_dir() / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
    if kind == "q4_0":
        f32 = convert(hf_dir, out.with_name(out.stem + ".f32.gguf"), "f32", bin_dir)
        _run([str(bin_dir / "llama-quantize"), str(f32), str(out), "Q4_0"], "llama-quantize")
        f32.unlink()
        return out
    _run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(hf_dir), "--outfile", str(out), "--outtype", kind],
         "convert_hf_to_gguf.py")
    return out


def bench(gguf: Path, bin_dir: Path, threads: int, prompt: int, gen: int, depths: list[int],
          cache: str | None = None) -> dict:
    """llama-bench's prefill of PROMPT tokens and decode of GEN tokens after each of DEPTHS tokens (ms
    per token, mean ± sd over 3 repetitions); repacked weights first, plain ones if repacking fails.
    CACHE: None for llama.cpp's default (an f16 cache, flash attention where it chooses), or a cache
    type (q8_0) for keys and values, with flash attention on, which a quantised V cache requires.

    Two invocations: with -d, llama-bench runs the prompt test at every depth too, and a prompt of
    512 after 952 tokens would pass GPT-2's 1,024 positions.
    """
    failure = ""
    for repack in (1, 0):
        common = [str(bin_dir / "llama-bench"), "-m", str(gguf), "-t", str(threads), "-r", "3", "-o", "json",
                  "--repack", str(repack)] + (["-ctk", cache, "-ctv", cache, "-fa", "on"] if cache else [])
        runs = []
        for test in (["-p", str(prompt), "-n", "0"], ["-p", "0", "-n", str(gen), "-d", ",".join(map(str, depths))]):
            proc = subprocess.run(common + test, capture_output=True, text=True)
            if proc.returncode:
                failure = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
                break
            runs += json.loads(proc.stdout)
        else:
            return _parse(runs, repack)
    raise Unavailable(f"llama-bench failed with and without repacking: {failure}")


def _parse(runs: list[dict], repack: int) -> dict:
    """{"prefill_ms": ms for the prompt, "decode_ms_at": {depth: ms/token}, "decode_ms_sd_at": ..., "repack": ...}."""
    first = runs[0] if runs else {}
    out = {"repack": bool(repack), "decode_ms_at": {}, "decode_ms_sd_at": {}, "prefill_ms": None,
           "build": first.get("build_commit"), "type_k": first.get("type_k"), "type_v": first.get("type_v"),
           "flash_attn": first.get("flash_attn"), "samples_ns": {}}
    for r in runs:
        per_token = 1e3 / r["avg_ts"]
        sd = per_token * r["stddev_ts"] / r["avg_ts"]
        if r["n_gen"]:
            out["decode_ms_at"][str(r.get("n_depth", 0))] = per_token
            out["decode_ms_sd_at"][str(r.get("n_depth", 0))] = sd
            out["samples_ns"][f"tg{r['n_gen']}@d{r.get('n_depth', 0)}"] = r.get("samples_ns")
        elif r["n_prompt"] and out["prefill_ms"] is None:
            out["prefill_ms"] = per_token * r["n_prompt"]
    return out


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise Unavailable(f"{what} failed: {' | '.join(tail)}")
