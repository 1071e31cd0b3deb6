#!/usr/bin/env bash
# The main job: install the runtime (no torch) into .venv and run the bundled keyword-spotting
# ES-SSM on the bundled recording as a live stream, with an energy-aware controller choosing the
# spectral budget K every step. Extra arguments go to `essm-stream demo` (e.g. --fast, --mic).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh ""
# not exec: the demo times its start-up from its own process start, which exec would move back to the install
.venv/bin/essm-stream demo --plot "${ESSM_DEMO_PLOT:-runs/kws_demo.png}" "$@"
