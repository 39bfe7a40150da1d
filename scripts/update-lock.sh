#!/usr/bin/env bash
# Move the locks to the newest versions pyproject.toml and requirements/peer.in allow.
#
# Resolves both locks afresh in a scratch folder (pip-compile from pip-tools), builds both
# environments there from them, runs the whole test suite against them, and only when it is
# green rewrites requirements/*.lock.txt, printing every version that moved. A red suite leaves
# the locks as they were and prints the same list, so the change that broke it is named.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_TOOLS=pip-tools==7.6.2
scratch=$(mktemp -d "${TMPDIR:-/tmp}/clidep-lock.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
quiet() { "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; }

python3 -m venv "$scratch/tools"
quiet "$scratch/tools/bin/python" -m pip install -q "$PIP_TOOLS"
compile() {  # compile OUT INPUT...
    local out=$1; shift
    quiet "$scratch/tools/bin/pip-compile" -q --allow-unsafe --strip-extras --no-emit-index-url \
        --no-emit-find-links --no-header -c requirements/torch.txt -o "$out" "$@" requirements/pip.in
}
compile "$scratch/clidep.lock.txt" --extra test --extra executorch pyproject.toml
compile "$scratch/peer.lock.txt" requirements/peer.in

moved() {  # moved OLD NEW: one line per package whose version changed
    python3 - "$1" "$2" <<'PY'
import re, sys
def pins(path):
    try:
        text = open(path).read()
    except FileNotFoundError:
        text = ""
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M))
old, new = pins(sys.argv[1]), pins(sys.argv[2])
for name in sorted(old.keys() | new.keys()):
    if old.get(name) != new.get(name):
        print(f"  {name}: {old.get(name, '-')} -> {new.get(name, '-')}")
PY
}
for lock in clidep peer; do
    echo "$lock.lock.txt:"; moved "requirements/$lock.lock.txt" "$scratch/$lock.lock.txt"
done

bash scripts/lock-env.sh "$scratch/venv" "$scratch/clidep.lock.txt" --editable
bash scripts/lock-env.sh "$scratch/venv-peer" "$scratch/peer.lock.txt"
if ! CLIDEP_PEER_PYTHON="$scratch/venv-peer/bin/python" "$scratch/venv/bin/python" -m pytest -q -p no:cacheprovider; then
    echo "update-lock: the suite failed on the versions above; the locks are unchanged" >&2
    exit 1
fi
cp "$scratch/clidep.lock.txt" "$scratch/peer.lock.txt" requirements/
echo "update-lock: suite green; requirements/clidep.lock.txt and peer.lock.txt rewritten"
