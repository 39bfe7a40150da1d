#!/usr/bin/env bash
# Build llama.cpp once, outside the repository (CLIDEP_LLAMA_CACHE, default ~/.cache/clidep/llama.cpp):
# the llama-cpp-python sdist from the package registry (llama.cpp's source and its Python bindings),
# compiled with cmake for this CPU into libllama, llama-bench and llama-quantize (~6 min on 2 cores).
# export --gguf checks its files in it and bench --runtime llamacpp times them with it. Needs cmake
# (from the package registry where it is missing) and a C++ compiler; prints the folder of the tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null; then  # cmake's own wheel from the package registry, outside the repository
    tools="${CLIDEP_LLAMA_CACHE:-$HOME/.cache/clidep/llama.cpp}/cmake-env"
    [ -x "$tools/bin/cmake" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q cmake; }
    export PATH="$tools/bin:$PATH"
fi
.venv/bin/python -m clidep.runtime.llamacpp
