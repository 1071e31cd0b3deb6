#!/usr/bin/env bash
# the GPU round's test (RULE.txt): X (A16 step 8 500), D and H step 28 000 on the fresh held-out sets of fold H, every
# SNR, thresholds chosen by each model on the fold's validation sets in this run (<= 10 FA/h keyword-free, --fa-on neg);
# TC-ResNet8 beside them. PS=1 adds pocketsphinx at 1e20 (PS_rule.txt); SPK=1 reads the per-speaker folder
# (sets_fresh_spk: the same speech, one stream per speaker; reported only). Run from the directory that holds runs/.
export PYTHONPATH=${ESSM_SRC:-$PWD} OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
fold=ho-festival.ked+festival.slt
PSARGS="--no-pocketsphinx"; SETS=runs/kws12/sets_fresh; OUTD=runs/kws12/eval_fresh
[ "${SPK:-0}" = 1 ] && SETS=runs/kws12/sets_fresh_spk && OUTD=runs/kws12/eval_fresh_spk
[ "${PS:-0}" = 1 ] && PSARGS="--ps-threshold 1e20 --ps-neg-s 0 --ps-workers 2" && OUTD=${OUTD}_ps
exec nice -n 10 ${PYTHON:-python} -m essm_stream kws-eval --loso --sets $SETS \
    --models X=runs/kws12/models_X D=runs/kws12/models_D H28=runs/kws12/models_H28 --tcresnet runs/kws7/models_tc \
    --out $OUTD --hold-out festival:ked_diphone,festival:cmu_us_slt_arctic_hts --fa-target 10 --fa-on neg $PSARGS
