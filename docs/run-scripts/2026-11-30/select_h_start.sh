#!/usr/bin/env bash
# run H's starting point: D vs G step 9000 on the H fold's validation (espeak-ng test variants only), <= 10 FA/h keyword-free
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.calib select runs/kws2/sets_h \
    runs/kws2/models_d/festival/kws.essm runs/kws2/cal_programs/models_g_step_9000/kws.essm \
    --family festival:ked_diphone,festival:cmu_us_slt_arctic_hts --fa-on neg --out runs/kws2/cal_select_h_start.jsonl
