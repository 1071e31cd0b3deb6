#!/usr/bin/env bash
# run H's held-out material: rounds 1-4 of extra eval keywords (5 alone + 5 in sentences per keyword) and 250
# keyword-free sentences for each held-out voice (festival ked_diphone, slt HTS): corpus.more_jobs
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
for r in 1 2 3 4; do
nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.corpus runs/kws2/banks --workers 2 --more-round $r \
    --more festival:ked_diphone,festival:cmu_us_slt_arctic_hts
done
