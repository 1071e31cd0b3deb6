#!/usr/bin/env bash
# kws11 design 1 (runs/kws11/V_rule.txt): the H fold at every SNR, D and H plain and as first stages of the
# pocketsphinx-verifier cascade (pair chosen on espeak-ng validation, <= 10 FA/h keyword-free), pocketsphinx alone
# at its given 1e20 (detections from a copy of kws7's cache), TC-ResNet8 and the level gate not rerun (see kws7).
cd "${ESSM_ROOT:-.}"
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
F=ho-festival.ked+festival.slt
mkdir -p runs/kws11/eval_h
echo '{"old": {}}' > runs/kws11/eval_h/extras_$F.json      # no previous-model / gate re-run (kws7 has them)
exec nice -n 10 ${PYTHON:-/work/main/.venv/bin/python} -m essm_stream kws-eval --loso --sets runs/kws7/sets_h \
    --models D=runs/kws11/models_D H=runs/kws11/models_H --out runs/kws11/eval_h \
    --hold-out festival:ked_diphone,festival:cmu_us_slt_arctic_hts --fa-target 10 --fa-on neg \
    --ps-threshold 1e20 --ps-neg-s 0 --ps-cache runs/kws11/ps_cache_h --ps-workers 2 \
    --verify pocketsphinx --verify-cache runs/kws11/verify_cache
