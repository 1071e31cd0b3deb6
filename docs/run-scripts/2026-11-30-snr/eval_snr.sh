#!/usr/bin/env bash
# kws7: the H fold at every SNR with the peers, one kws-eval run (thresholds: D and H by H_rule.txt, TC-ResNet8 by
# TC_rule.txt, all three recomputed here on the same validation sets by the same rule; pocketsphinx 1e20 by PS_rule.txt)
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
fold=ho-festival.ked+festival.slt
for m in D H; do                      # copies: kws-eval stores the validation threshold in the program it scores
  mkdir -p runs/kws7/models_$m/$fold
  [ -f runs/kws7/models_$m/$fold/kws.essm ] || cp runs/kws2/models_h$m/$fold/kws.essm runs/kws7/models_$m/$fold/
done
# pocketsphinx on clean / 10 dB was decoded by kws5 (runs/kws5/ps_test.json, whole sets): seed kws-eval's cache with it
nice -n 10 ${PYTHON:-.venv/bin/python} runs/kws7/ps_seed.py runs/kws7/eval_snr
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream kws-eval --loso --sets runs/kws7/sets_h \
    --models D=runs/kws7/models_D H=runs/kws7/models_H --tcresnet runs/kws7/models_tc --out runs/kws7/eval_snr \
    --hold-out festival:ked_diphone,festival:cmu_us_slt_arctic_hts --fa-target 10 --fa-on neg \
    --ps-threshold 1e20 --ps-neg-s 0 --ps-workers 2
