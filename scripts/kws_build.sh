#!/usr/bin/env bash
# Rebuild the bundled keyword model from nothing (≈ 5 min data + ≈ 30 min training on 2 busy CPU
# cores): synthesise the data set, train K̄=32 with budget dropout (+ TC-ResNet8 baseline), install
# the compiled program into essm_stream/assets, then evaluate (clip sweep and streams) and store the
# threshold chosen on the training-voice stream in the program.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${KWS_OUT:-runs/kws}"
.venv/bin/essm-stream kws-data --out "$out/data"
.venv/bin/essm-stream kws-train --data "$out/data" --out "$out/model" --steps "${KWS_STEPS:-3400}" --install
.venv/bin/essm-stream kws-eval --data "$out/data" --program essm_stream/assets/kws_default.essm --out "$out/eval" \
  --baseline "$out/model/results.json"
