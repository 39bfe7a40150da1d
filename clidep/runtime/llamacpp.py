"""llama.cpp, built once from the package registry: its tools, its Python bindings and llama-bench.

The source is the `llama-cpp-python` sdist, which carries llama.cpp in `vendor/llama.cpp` and the
ctypes bindings in `llama_cpp/`. One cmake build (shared libraries, so that the bindings load the
same `libllama` the tools link) makes `libllama`, `llama-bench` and `llama-quantize` in a cache outside
the repository (CLIDEP_LLAMA_CACHE, default ~/.cache/clidep/llama.cpp), ~6 minutes on 2 cores, with
GGML_NATIVE (this CPU's kernels, including the repacked Q4_0/Q8_0 ones where it has them) but without
Intel's AMX tiles (FLAGS says why); the build folder is named by its flags, so a change of them builds anew.
`scripts/llamacpp.sh` (``python -m clidep.runtime.llamacpp``) builds it; everything else only finds
it and says how to build it where it is missing.

Nothing here imports torch: the device side may run llama-bench too.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

from clidep.errors import ClidepError, Unavailable

if TYPE_CHECKING:
    import numpy as np

VERSION = "0.3.36"  # llama-cpp-python, whose sdist pins the llama.cpp source (and bindings) used here
TOOLS = ("llama-bench", "llama-quantize")
BUILD_HINT = "run `bash scripts/llamacpp.sh` once (builds llama.cpp from the registry's llama-cpp-python sdist, ~6 min)"


def build_root() -> Path:
    """Where llama.cpp's sdist is unpacked and built, by version ($CLIDEP_LLAMA_CACHE, else the cache's llama.cpp)."""
    return Path(os.environ.get("CLIDEP_LLAMA_CACHE", Path.home() / ".cache" / "clidep" / "llama.cpp")) / VERSION


#: cmake's flags. GGML_NATIVE compiles for this CPU; on x86-64 AMX is compiled out: a VM whose CPUID offers AMX
#: without the hypervisor enabling its tile state (an Intel Xeon guest here, kernel permission granted) dies with
#: SIGILL on the first Q8_0 matmul (`tileloadd` in tinygemm_kernel_amx; llama.cpp issue 28328 is this class), and
#: AMX only speeds up large prefill batches on server CPUs, never the ARM devices clidep targets.
FLAGS = (
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DBUILD_SHARED_LIBS=ON",
    "-DCMAKE_BUILD_TYPE=Release",
) + (
    (
        "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
        "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    )
    if platform.machine() in ("x86_64", "AMD64")
    else ()
)


def build_dir() -> Path:
    """The cmake build folder, named by FLAGS' digest: a build made with other flags is not used."""
    return build_root() / f"build-{hashlib.sha256(chr(0).join(FLAGS).encode()).hexdigest()[:8]}"


def source_dir() -> Path:
    """The sdist's root (its `llama_cpp/` bindings, `vendor/llama.cpp/` source)."""
    return build_root() / f"llama_cpp_python-{VERSION}"


def _lib_name() -> str:
    return {"darwin": "libllama.dylib", "win32": "llama.dll"}.get(sys.platform, "libllama.so")


def bin_dir() -> Path:
    """The folder with the built tools and libllama; Unavailable (saying how to build) where it is incomplete."""
    bins = build_dir() / "bin"
    missing = [t for t in (*TOOLS, _lib_name()) if not (bins / t).is_file()]
    if missing:
        raise Unavailable(f"llama.cpp is not built here ({', '.join(missing)} missing in {bins}): {BUILD_HINT}")
    return bins


def build(log=print) -> Path:
    """bin_dir(), building llama.cpp from the sdist first where it is not cached yet."""
    try:
        return bin_dir()
    except Unavailable:
        pass
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    if missing:
        raise Unavailable(f"cannot build llama.cpp: {', '.join(missing)} not found")
    root = build_root()
    src = _source(root, log)
    log(f"building libllama, llama-bench and llama-quantize in {build_dir()} (~6 min on 2 cores) ...")
    run_tool(["cmake", "-S", str(src / "vendor" / "llama.cpp"), "-B", str(build_dir()), *FLAGS], "cmake configure")
    run_tool(
        ["cmake", "--build", str(build_dir()), "--target", "llama", *TOOLS, "-j", str(os.cpu_count())], "cmake build"
    )
    return bin_dir()


def _source(root: Path, log) -> Path:
    """The sdist, downloaded from the package registry and unpacked once."""
    src = source_dir()
    if (src / "vendor" / "llama.cpp").is_dir():
        return src
    root.mkdir(parents=True, exist_ok=True)
    log(f"downloading the llama-cpp-python {VERSION} sdist (llama.cpp source) ...")
    run_tool(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={VERSION}",
            "-d",
            str(root),
        ],
        "pip download",
    )
    with tarfile.open(root / f"llama_cpp_python-{VERSION}.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return src


def bindings():
    """llama-cpp-python's `llama_cpp` module from the sdist, on the libllama built beside the tools."""
    if "llama_cpp" not in sys.modules:
        lib = bin_dir()
        os.environ["LLAMA_CPP_LIB_PATH"] = str(lib)
        sys.path.insert(0, str(source_dir()))
        try:
            import llama_cpp  # noqa: F401
        finally:
            sys.path.remove(str(source_dir()))
    return sys.modules["llama_cpp"]


class LlamaCppModel:
    """A GGUF file opened in llama.cpp through its Python bindings, for checks: logits of whole windows (the
    perplexity function's LogitsFn), greedy continuations and llama.cpp's own tokeniser.

    EXACT_CACHE: an F32 KV cache without flash attention, so that an F32 file's logits are llama.cpp's F32
    arithmetic alone; otherwise llama.cpp's defaults (F16 cache, flash attention where it chooses), what a
    user of the file gets."""

    def __init__(self, path: Path, n_ctx: int, threads: int | None = None, exact_cache: bool = False):
        llama_cpp = bindings()
        extra = {"type_k": 0, "type_v": 0, "flash_attn": False} if exact_cache else {}  # 0: GGML_TYPE_F32
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                n_threads=threads or os.cpu_count(),
                logits_all=True,
                verbose=False,
                **extra,
            )
        except ValueError as exc:  # the bindings' "Failed to load model from file"
            raise Unavailable(f"llama.cpp cannot load {path.name}: {exc}") from exc
        self.n_ctx = n_ctx

    def logits(self, ids) -> np.ndarray:
        """(B, T) token ids -> (B, T, V) float32 logits, each row from an empty cache."""
        import numpy as np

        out = []
        for row in np.asarray(ids):
            self.llm.reset()
            self.llm.eval(row.tolist())
            out.append(np.array(self.llm.scores[: row.size], dtype=np.float32))
        return np.stack(out)

    def generate(self, prompt, max_new_tokens: int) -> np.ndarray:
        """(1, P) -> (1, P + MAX_NEW_TOKENS): greedy, the argmax of each step's logits."""
        import numpy as np

        self.llm.reset()
        tokens = list(map(int, np.asarray(prompt)[0]))
        self.llm.eval(tokens)
        for _ in range(max_new_tokens):
            tokens.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
            self.llm.eval(tokens[-1:])
        return np.asarray([tokens], dtype=np.int64)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's token ids for TEXT, without a BOS token and with special tokens read as text."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def close(self) -> None:
        self.llm.close()


def gguf_positions(file: Path) -> int:
    """A GPT-2 GGUF file's trained context (gpt2.context_length), read with the gguf package alone."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(file)).get_field("gpt2.context_length")
    except (OSError, ValueError) as exc:
        raise ClidepError(f"cannot read '{file}' as a GGUF file: {exc}") from None
    if field is None:
        raise ClidepError(f"'{file}' holds no gpt2.context_length: not a GPT-2 GGUF file")
    return int(field.contents())


def quantize(src: Path, dst: Path, kind: str) -> Path:
    """llama-quantize SRC (a GGUF file) to KIND (e.g. Q4_0) at DST: llama.cpp's own choice of types per tensor."""
    run_tool([str(bin_dir() / "llama-quantize"), str(src), str(dst), kind], "llama-quantize")
    return dst


def run_tool(cmd: list[str], what: str) -> None:
    """Run a build or conversion step; Unavailable with its last lines where it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        said = " | ".join(tail) or "it printed nothing"
        raise Unavailable(f"{what} failed with exit status {proc.returncode}: {said}")


if __name__ == "__main__":
    try:
        print(build(lambda m: print(m, file=sys.stderr)))
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
