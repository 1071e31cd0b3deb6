#!/usr/bin/env bash
# run H's held-out test sets: festival ked_diphone + slt HTS keyword streams (eval banks + 4 more rounds) and their
# keyword-free speech (neg banks + 4 more rounds), clean and 10 dB (30 min of keyword-free speech at 10 dB);
# validation = symlinks to the flite fold's espeak-ng-only calibration sets (see H_rule.txt)
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
while kill -0 "$(cat runs/kws2/banks_h_more.pid)" 2>/dev/null; do sleep 5; done
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.loso runs/kws2/banks runs/kws2/sets_h \
    --hold-out festival:ked_diphone,festival:cmu_us_slt_arctic_hts --part test --snrs clean,10 --neg-noisy-s 1800
