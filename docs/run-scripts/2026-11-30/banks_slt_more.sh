#!/usr/bin/env bash
# reporting only (after the H decision): held-out material of flite slt (excluded from H's training and validation,
# the slt HTS speaker through another engine): 5 extra rounds of eval keywords + keyword-free sentences, then its test sets
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
for r in 1 2 3 4 5; do
nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.corpus runs/kws2/banks --workers 1 --more-round $r --more flite:slt
done
mkdir -p runs/kws2/sets_slt
for f in runs/kws2/sets_h/val_*; do b=$(basename "$f"); ln -sf "$(readlink -f "$f")" "runs/kws2/sets_slt/${b/ho-festival.ked+festival.slt/ho-flite.slt}"; done
nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.loso runs/kws2/banks runs/kws2/sets_slt --hold-out flite:slt \
    --part test --snrs clean,10 --neg-noisy-s 1800
