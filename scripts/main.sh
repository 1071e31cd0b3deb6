#!/usr/bin/env bash
# The main job: install, train a small ES-SSM once at K̄=32 with budget dropout on a generated task,
# then print its budget sweep (accuracy at every runtime budget K, sweet spot, collapse boundary).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh train,dev
out="${ESSM_OUT:-runs/quickstart}"
.venv/bin/essm-stream train --task digits --steps "${ESSM_STEPS:-800}" --layers 4 --lr 1e-2 --out "$out"
.venv/bin/essm-stream sweep "$out/model.safetensors" --plot "$out/sweep.png" --json "$out/sweep.json"
