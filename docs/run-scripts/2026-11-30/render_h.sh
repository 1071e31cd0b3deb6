#!/usr/bin/env bash
# run H: wide-speaker renders of the newly trained recorded voices (flite kal, kal16, rms, festival kal_diphone),
# 16 renders each (~2 h of streams per voice, as flite awb has ~2.4 h in G's data); babble never from the
# held-out speakers (ked, slt)
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.render runs/kws2/banks runs/kws2/feats_hwide --workers ${WORKERS:-2} \
    --speaker wide --seed 31 --renders '{"flite": 16, "festival": 16}' \
    --voices flite:kal,flite:kal16,flite:rms,festival:kal_diphone \
    --hold-out festival:ked_diphone,festival:cmu_us_slt_arctic_hts
