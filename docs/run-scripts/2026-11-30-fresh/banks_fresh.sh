#!/usr/bin/env bash
# fresh held-out material for fold H (festival ked_diphone, slt HTS), 2026-11-30 evening: rounds 5-9 of
# corpus --more (new seeds: corpus._seed("eval-more"/"neg-more", voice, R)), 5 alone + 5 in sentences per keyword
# per voice and round (1 000 keywords in all) and 320 keyword-free sentences per voice and round, into a NEW
# banks folder (runs/kws2/banks, which holds rounds 1-4 and the eval / neg banks, stays untouched)
cd "${ESSM_ROOT:-/work/wt/kws}"
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
for r in 5 6 7 8 9; do
nice -n 10 ${PYTHON:-/work/main/.venv/bin/python} -m essm_stream.kws.corpus runs/kws12/banks_fresh --workers 2 \
    --more festival:ked_diphone,festival:cmu_us_slt_arctic_hts --more-round $r --more-neg 320
done
