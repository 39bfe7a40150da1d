#!/usr/bin/env bash
# Usage: scripts/lock-env.sh VENV LOCK [--editable]
# Create the virtual environment VENV with exactly the versions in LOCK (pip first, then the
# rest with --no-deps so that nothing outside the lock can enter), and with --editable install
# this checkout into it without resolving anything.
set -euo pipefail
venv=$1 lock=$2 editable=${3:-}
cd "$(dirname "$0")/.."
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q "$(grep -E '^pip==' "$lock")" 2>&1 | { grep -v '^WARNING: Location' || true; }
grep -vE '^(pip|clidep)==' "$lock" > "$venv/lock-without-pip.txt"
"$py" -m pip install -q --no-deps -r "$venv/lock-without-pip.txt" 2>&1 | { grep -v '^WARNING: Location' || true; }
if [ "$editable" = "--editable" ]; then
    "$py" -m pip install -q --no-deps -e . 2>&1 | { grep -v '^WARNING: Location' || true; }
fi
"$py" -m pip check >/dev/null
