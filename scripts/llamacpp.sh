#!/usr/bin/env bash
# Build llama.cpp once, outside the repository (CLIDEP_LLAMA_CACHE, default ~/.cache/clidep/llama.cpp):
# the llama-cpp-python sdist from the package registry (llama.cpp's source and its Python bindings),
# compiled with cmake for this CPU into libllama, llama-bench and llama-quantize (~6 min on 2 cores).
# export --gguf checks its files in it and bench --runtime llamacpp times them with it. Needs cmake
# and a C++ compiler; prints the folder of the tools.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m clidep.runtime.llamacpp
