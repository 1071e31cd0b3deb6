#!/usr/bin/env bash
# Leave-one-synthesizer-family-out keyword spotting from nothing (issue 9), resumable stage by stage
# (every stage skips the files it already wrote; training resumes from its last checkpoint):
#   1. utterance banks per voice (espeak-ng, flite, festival: scripts/kws_install_system.sh)
#   2. augmented training streams -> speech-embedding features + stream targets
#   3. one ES-SSM per held-out family (stream loss, budget dropout K̄=32, hard-negative mining)
#      + the TC-ResNet8 baseline on the same data
#   4. held-out and validation stream sets (keywords alone / in sentences, clean..5 dB, keyword-free)
#   5. essm-stream kws-eval --loso: every model, pocketsphinx, the previous bundled model; table + DET plot
# Environment: KWS2 (output root, default runs/kws2), KWS_FAMILIES, KWS_STEPS, KWS_MINUTES (per fold).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
out="${KWS2:-runs/kws2}"
fams="${KWS_FAMILIES:-festival flite espeak}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
$PY -m essm_stream.kws.corpus "$out/banks" --workers 2
$PY -m essm_stream.kws.render "$out/banks" "$out/feats" --workers 2
for f in $fams; do
  $PY -m essm_stream.kws.streamtrain "$out/feats" "$out/models/$f" --test-family "$f" \
    --steps "${KWS_STEPS:-2000}" --max-minutes "${KWS_MINUTES:-25}"
  $PY -m essm_stream.kws.baseline_stream "$out/feats" "$out/models/$f" "$f" 1000
done
$PY -m essm_stream.kws.loso "$out/banks" "$out/sets" --families "$(echo $fams | tr ' ' ,)"
$PY -m essm_stream kws-eval --loso --sets "$out/sets" --models "$out/models" --out "$out/eval" \
  --families "$(echo $fams | tr ' ' ,)"
