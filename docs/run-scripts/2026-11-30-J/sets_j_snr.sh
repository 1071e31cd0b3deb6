#!/usr/bin/env bash
# reporting only (J_rule: 20 / 5 dB if time allows): ked's test sets at 20 and 5 dB, built as the clean / 10 dB ones
cd "${ESSM_ROOT:-.}"
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
SPEC="festival:ked_diphone~festival:cmu_us_slt_arctic_hts,flite:slt,festival:lp_diphone,festival:czech_machac,festival:hy_fi_mv_diphone"
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.loso runs/kws2/banks runs/kws8/sets_j \
    --hold-out "$SPEC" --part test --snrs 20,5 --neg-noisy-s 1800
