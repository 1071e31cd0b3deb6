#!/usr/bin/env bash
# Install everything the tests need from the project's own files, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh train,dev,sim
exec .venv/bin/python -m pytest -q "$@"
