#!/usr/bin/env bash
# kws7: the H fold's 20 dB and 5 dB test sets, built exactly as sets_h.sh built clean / 10 dB (same banks, same
# seeds, same noise machinery, 30 min of keyword-free speech per noisy SNR) into runs/kws7/sets_h, which holds
# symlinks to every runs/kws2/sets_h file (clean / 10 dB test sets, the validation links): loso skips what exists
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.loso runs/kws2/banks runs/kws7/sets_h \
    --hold-out festival:ked_diphone,festival:cmu_us_slt_arctic_hts --part test --snrs 20,5 --neg-noisy-s 1800
