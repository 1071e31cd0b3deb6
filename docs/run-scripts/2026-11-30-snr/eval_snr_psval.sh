#!/usr/bin/env bash
# kws7: eval_snr.sh's run, but pocketsphinx's threshold chosen inside the run by PS_rule.txt's rule (clean validation
# sets cut to their first 1200 s, <= 10 FA/h keyword-free) instead of --ps-threshold; test detections from eval_snr's cache
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream kws-eval --loso --sets runs/kws7/sets_h \
    --models D=runs/kws7/models_D H=runs/kws7/models_H --tcresnet runs/kws7/models_tc --out runs/kws7/eval_snr_psval \
    --hold-out festival:ked_diphone,festival:cmu_us_slt_arctic_hts --fa-target 10 --fa-on neg \
    --ps-val-limit-s 1200 --ps-neg-s 0 --ps-workers 2 --ps-cache runs/kws7/eval_snr/ps_cache
