#!/usr/bin/env bash
# reporting only: run I's chosen program, K = 32 / 8 / 4 at the same false-accept rate on the H fold's test files (diagnose det-k)
cd "${ESSM_ROOT:-.}"
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.diagnose det-k runs/kws6/cal_programs/models_i_step_32000/kws.essm \
    --name I --sets runs/kws6/sets_i --test-family "ho-festival.ked+festival.slt~festival.lp+festival.machac+festival.mv" \
    --K 32,8,4 --caps 2,10,50 --conditions clean,10dB --fine --boot 2000 --json runs/kws6/detk_i.json --plot docs/img/kws_det_budgets_I.png
