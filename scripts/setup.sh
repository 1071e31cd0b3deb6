#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the given extras from its own files.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh train,dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1-train,dev}"     # "" installs the runtime only
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch==2.13.0 is pinned in the [train] extra: its CPU wheel is what this project is built against.
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install --quiet -e ".[${extras}]"
else
  .venv/bin/python -m pip install --quiet -e .
fi
