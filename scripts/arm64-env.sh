#!/usr/bin/env bash
# Usage: scripts/arm64-env.sh [--print]
#
# Build an emulated aarch64 device environment from registry packages alone, at the lock's
# versions, so that clidep's exports run on ARM kernels of ONNX Runtime without an ARM machine:
#   - qemu-user (Debian's qemu-user-static) runs aarch64 programs on this x86-64 host;
#   - an aarch64 Python 3.11 and its libraries, Debian's arm64 packages unpacked into a sysroot
#     (downloaded through a private apt state, so the host's dpkg architectures stay as they are);
#   - the aarch64 wheels of the locked numpy, onnxruntime and onnxruntime-genai (and what they
#     import) in the sysroot's site-packages;
#   - one root per emulated core (cortex-a76: the Raspberry Pi 5's, with the dot-product
#     instructions; cortex-a72: the Raspberry Pi 4's, without them), each with a /proc/cpuinfo that
#     describes that core: qemu-user resolves paths under -L first, and ONNX Runtime's CPU detection
#     crashes on the x86 host's own /proc/cpuinfo.
# The environment lives outside the repository, in $CLIDEP_ARM64_ENV, else
# ${CLIDEP_CACHE:-${XDG_CACHE_HOME:-~/.cache}/clidep}/arm64-env, under a key of this script and the
# lock, so a second run with nothing changed does nothing. It prints the Python launcher of each
# core (bin/python-cortex-a76, bin/python-cortex-a72); --print prints the folder and builds nothing.
# Needs Debian's apt (root, or sudo without a password) and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements/clidep.lock.txt
# The wheels the torch-free runner needs on the device: the lock's pins of these names.
wheels=$(grep -E '^(numpy|onnxruntime|onnxruntime-genai|flatbuffers|packaging|protobuf)==' "$lock")
# Debian's aarch64 Python 3.11 and the shared libraries it and the wheels load.
debs="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 libgomp1
      zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libuuid1 libcrypt1 libsqlite3-0
      libncursesw6 libtinfo6 libreadline8 libtirpc3 libnsl2 libdb5.3 libgssapi-krb5-2 libkrb5-3
      libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1"
cores="cortex-a76 cortex-a72"

if [ -n "${CLIDEP_ARM64_ENV:-}" ]; then
    env_dir=$CLIDEP_ARM64_ENV
elif [ -n "${CLIDEP_CACHE:-}" ]; then
    env_dir=$CLIDEP_CACHE/arm64-env
else
    env_dir=${XDG_CACHE_HOME:-$HOME/.cache}/clidep/arm64-env
fi
if [ "${1:-}" = "--print" ]; then
    echo "$env_dir"
    exit 0
fi
key=$({ cat "$0"; echo "$wheels"; } | sha256sum | cut -c1-16)
if [ -f "$env_dir/ready" ] && [ "$(cat "$env_dir/ready")" = "$key" ]; then
    for core in $cores; do echo "$env_dir/bin/python-$core"; done
    exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
if ! command -v qemu-aarch64-static >/dev/null; then
    as_root apt-get install -y -q qemu-user-static >/dev/null 2>&1 \
        || { as_root apt-get update -q >/dev/null && as_root apt-get install -y -q qemu-user-static >/dev/null; }
fi
qemu=$(command -v qemu-aarch64-static)

mkdir -p "$(dirname "$env_dir")"
build=$(mktemp -d "$(dirname "$env_dir")/.arm64-env.XXXXXX")
trap 'rm -rf "$build"' EXIT
# A private apt state that sees arm64 only: the host's own package lists and dpkg are not touched.
apt=(-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o "Dir::State::Lists=$build/apt/lists"
     -o "Dir::Cache=$build/apt/cache" -o "Dir::State::status=$build/apt/status" -o APT::Sandbox::User=root)
mkdir -p "$build/apt/lists/partial" "$build/apt/cache/archives/partial" "$build/debs" "$build/sysroot"
touch "$build/apt/status"
apt-get "${apt[@]}" update -q >/dev/null
(cd "$build/debs" && apt-get "${apt[@]}" download $debs >/dev/null)
for deb in "$build"/debs/*.deb; do dpkg-deb -x "$deb" "$build/sysroot"; done
(cd "$build/debs" && ls) > "$build/debs.txt"

site="$build/sysroot/usr/local/lib/python3.11/dist-packages"  # on Debian's sys.path
mkdir -p "$site" "$build/wheels"
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux2014_aarch64 -d "$build/wheels" $wheels 2>&1 | { grep -v '^WARNING: Location' || true; }
for whl in "$build"/wheels/*.whl; do python3 -m zipfile -e "$whl" "$site"; done

# The HWCAP bits qemu 7.2 gives each model (getauxval(AT_HWCAP): 0x119ffb and 0x8fb), as the kernel would print them.
features_a76="fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
features_a72="fp asimd aes pmull sha1 sha2 crc32 cpuid"
mkdir -p "$build/bin" "$build/roots"
for core in $cores; do
    root="$build/roots/$core"
    mkdir -p "$root/proc"
    for d in "$build"/sysroot/*; do ln -s "../../sysroot/${d##*/}" "$root/${d##*/}"; done
    case $core in
        cortex-a76) features=$features_a76 variant=0x4 part=0xd0b revision=1 ;;
        cortex-a72) features=$features_a72 variant=0x0 part=0xd08 revision=3 ;;
    esac
    for ((i = 0; i < $(nproc); i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
            "$i" "$features" "$variant" "$part" "$revision"
    done > "$root/proc/cpuinfo"
    cat > "$build/bin/python-$core" <<EOF
#!/bin/sh
# Python 3.11 on an emulated $core (qemu-user), with the lock's numpy and ONNX Runtime.
exec "$qemu" -cpu $core -L "$env_dir/roots/$core" "$env_dir/sysroot/usr/bin/python3.11" "\$@"
EOF
    chmod +x "$build/bin/python-$core"
    # the environment works before it is kept (from where it is built: the launcher names where it will be)
    "$qemu" -cpu "$core" -L "$root" "$build/sysroot/usr/bin/python3.11" -c \
        "import numpy, onnxruntime, onnxruntime_genai, platform; assert platform.machine() == 'aarch64'"
done
echo "$key" > "$build/ready"
rm -rf "$build/apt" "$build/debs" "$build/wheels"
rm -rf "$env_dir.old"
[ -e "$env_dir" ] && mv "$env_dir" "$env_dir.old"
mv "$build" "$env_dir"
rm -rf "$env_dir.old"
trap - EXIT
for core in $cores; do echo "$env_dir/bin/python-$core"; done
