#!/usr/bin/env bash
# kws7: K = 32 / 8 / 4 hits at matched keyword-free false-accept rates (diagnose det-k, as runs/kws4/detk.sh --fine)
# on the H fold's new 20 dB and 5 dB test streams; D and H as scored by eval_snr.sh -> runs/kws7/detk_h_snr.{md,json,png}
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
fold=ho-festival.ked+festival.slt
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.diagnose det-k runs/kws7/models_D/$fold/kws.essm \
    runs/kws7/models_H/$fold/kws.essm --name D --name H --sets runs/kws7/sets_h \
    --test-family festival:ked_diphone,festival:cmu_us_slt_arctic_hts --K 32,8,4 --caps 2,10,50 \
    --conditions 20dB,5dB --fine --boot 2000 --json runs/kws7/detk_h_snr.json --plot runs/kws7/detk_h_snr.png \
    > runs/kws7/detk_h_snr.md
