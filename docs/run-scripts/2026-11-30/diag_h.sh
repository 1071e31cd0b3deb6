#!/usr/bin/env bash
# keyword-window posteriors per speaker group of the H fold (training / validation / held-out ked, slt HTS): D vs H (step 28 000)
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
for m in runs/kws2/models_d/festival runs/kws2/cal_programs/models_h_step_28000; do
  echo "== $m"
  nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.diagnose streams $m runs/kws2/feats_h --test-feats runs/kws2/feats \
      --test-family festival:ked_diphone,festival:cmu_us_slt_arctic_hts
done
