#!/usr/bin/env bash
# Install clidep into .venv, and optimum (the peer toolchain and ecosystem client) into .venv-peer.
#
# Two environments because optimum-onnx pins transformers<4.58 while clidep's model family is
# written for transformers 5 (see README, "Design decisions"). torch==2.13.0 comes first in both:
# its CPU build lies on local disk here, and an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
python3 -m venv .venv-peer
.venv-peer/bin/python -m pip install -q --upgrade pip
.venv-peer/bin/python -m pip install -q torch==2.13.0
.venv-peer/bin/python -m pip install -q "optimum-onnx[onnxruntime]==0.1.0" "accelerate>=1.0"
