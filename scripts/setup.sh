#!/usr/bin/env bash
# Install clidep into .venv, and optimum (the peer toolchain and ecosystem client) into .venv-peer,
# each from its lock (requirements/*.lock.txt): a fresh machine gets exactly the versions the
# test suite passed with. To move them, run scripts/update-lock.sh.
#
# Two environments because optimum-onnx pins transformers<4.58 while clidep's model family is
# written for transformers 5 (see README, "Design decisions"). torch is the CPU build 2.13.0 in
# both: it lies on local disk here, and an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lock-env.sh .venv requirements/clidep.lock.txt --editable
bash scripts/lock-env.sh .venv-peer requirements/peer.lock.txt
# The emulated aarch64 device environment (qemu-user, an arm64 Python, the lock's aarch64 wheels)
# that export --check-arm and tests/test_arm.py run on; outside the repository, built once.
bash scripts/arm64-env.sh >/dev/null || echo "scripts/arm64-env.sh failed (it needs Debian's apt): export --check-arm and tests/test_arm.py need it"
