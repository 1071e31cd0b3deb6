#!/bin/bash
# kws10 speaker-rule demonstration (runs/kws10/RULE.txt); from the repository root.
# usage: bash runs/kws10/demo.sh TAG RULE   (TAG: AvB | BvA; RULE: spk | pool)
set -euo pipefail
export PYTHONPATH=. OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
TAG=$1; RULE=$2
FOLD=$(ls runs/kws10/sets_$TAG | sed -n 's/^val_\(.*\)_neg_.*/\1/p' | head -1)
if [ "$RULE" = spk ]; then ARGS="--fa-target 10 --speaker-fa-target 2 --speaker-quantile 0.8"; else ARGS="--fa-target 2"; fi
nice -n 10 /work/main/.venv/bin/python -m essm_stream kws-eval --loso --hold-out "$FOLD" --sets runs/kws10/sets_$TAG \
  --models D=runs/kws10/models_${TAG}_${RULE}_D H28=runs/kws10/models_${TAG}_${RULE}_H28 \
  --out runs/kws10/eval_${TAG}_${RULE} --no-pocketsphinx --fa-on neg $ARGS
