#!/usr/bin/env bash
# Everything clidep and its test suite need, built once: each step prints its time, and each is
# cached (the environments by their locks, the rest under ~/.cache/clidep), so a second run only
# checks. Where a piece cannot be built on this machine, one line says so and set-up goes on; the
# tests that need it then fail saying the same.
#
#   .venv       clidep, exactly as requirements/clidep.lock.txt pins it (editable)
#   .venv-peer  optimum, the peer toolchain and ecosystem client (requirements/peer.lock.txt): a
#               second environment because optimum-onnx pins transformers<4.58 while clidep's model
#               family is written for transformers 5 (docs/design.md)
#   aarch64     the emulated device that export --check-arm and tests/test_arm.py run on
#               (scripts/arm64-env.sh: qemu-user and Debian's arm64 Python, needs apt)
#   llama.cpp   built from the registry's llama-cpp-python sdist (scripts/llamacpp.sh, ~6 min the
#               first time): export --gguf checks its files in it, bench --runtime llamacpp times them
#   sshd        Debian's OpenSSH server, for the bench --remote test on 127.0.0.1
#
# torch is the CPU build 2.13.0 in both environments: an unpinned torch pulls a multi-GB CUDA build.
# To move the locks, run scripts/update-lock.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=${CLIDEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clidep}/setup-logs
mkdir -p "$logs"

# step NAME NEEDED-BY COMMAND...: run COMMAND with its output in a log, print one line with its time.
step() {
    local name=$1 needed_by=$2 t0=$SECONDS
    shift 2
    if "$@" >"$logs/$name.log" 2>&1; then
        echo "setup: $name ready ($((SECONDS - t0)) s)"
    else
        echo "setup: $name could not be built here ($((SECONDS - t0)) s, log: $logs/$name.log): $needed_by"
        return 1
    fi
}

install_sshd() {
    if command -v sshd >/dev/null || [ -x /usr/sbin/sshd ]; then return 0; fi
    local sudo=
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    $sudo apt-get install -y -q openssh-server || { $sudo apt-get update -q && $sudo apt-get install -y -q openssh-server; }
}

step clidep-env "clidep itself cannot run" bash scripts/lock-env.sh .venv requirements/clidep.lock.txt --editable
step peer-env "the optimum peer and client tests need .venv-peer" bash scripts/lock-env.sh .venv-peer requirements/peer.lock.txt
step aarch64 "export --check-arm and tests/test_arm.py need it (Debian's apt)" bash scripts/arm64-env.sh || true
step llama.cpp "export --gguf, bench --runtime llamacpp and tests/test_gguf.py need it (cmake, a C++ compiler)" \
    bash scripts/llamacpp.sh || true
step sshd "tests/test_remote.py needs an OpenSSH server (Debian's openssh-server)" install_sshd || true
