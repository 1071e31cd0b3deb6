#!/usr/bin/env bash
# Rebuild the bundled keyword model from nothing (≈ 5 min data + ≈ 30 min base training + ≈ 25 min
# long-clip training on 2 CPU cores): synthesise the data set, train K̄=32 with budget dropout on the
# 64-step clips (+ TC-ResNet8 baseline), build the long stream-format clips, continue training on them
# (mixed with the 64-step clips), install the compiled program into essm_stream/assets, then evaluate
# (clip sweep and streams) and store the threshold chosen on the training-voice stream in the program.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${KWS_OUT:-runs/kws}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
.venv/bin/essm-stream kws-data --out "$out/data"
.venv/bin/essm-stream kws-train --data "$out/data" --out "$out/model" --steps "${KWS_STEPS:-3400}"
OMP_NUM_THREADS=1 .venv/bin/python -m essm_stream.kws.longclips "$out/data"          # long.npz: 10 000 + 1 200 clips
OMP_NUM_THREADS=1 .venv/bin/python -m essm_stream.kws.longclips "$out/data" 1 20000  # long_extra1.npz: 20 000 more
.venv/bin/essm-stream kws-train --long --init "$out/model/essm/model.safetensors" --data "$out/data" \
  --out "$out/long" --steps 12000 --lr 2e-3 --max-minutes "${KWS_LONG_MINUTES:-25}" --install
.venv/bin/essm-stream kws-eval --data "$out/data" --program essm_stream/assets/kws_default.essm --out "$out/eval" \
  --baseline "$out/model/results.json"
