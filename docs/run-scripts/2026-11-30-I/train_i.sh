#!/usr/bin/env bash
# run I (runs/kws6/I_rule.txt): run H's step 28 000 continued (--extend 1) with H's recipe (train_h.sh) on
# runs/kws6/feats_i: run H's streams + the wide-speaker renders of festival's new training voices of other
# languages (render_i.sh); fold I's validation speakers (lp, machac, mv) and held-out speakers never train.
# Resumable: rerun the same command (without --extend once extended); snapshots every 1 000 steps.
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
FOLD="festival:ked_diphone,festival:cmu_us_slt_arctic_hts~festival:lp_diphone,festival:czech_machac,festival:hy_fi_mv_diphone"
M="runs/kws6/models_i/ho-festival.ked+festival.slt~festival.lp+festival.machac+festival.mv"
H=runs/kws2/models_h/ho-festival.ked+festival.slt
mkdir -p "$M"
if [ ! -f "$M/last.safetensors" ]; then
    cp $H/step_28000.safetensors "$M/last.safetensors"
    cp $H/norm.json "$M/"                                 # D's normalisation, as H
fi
EXT="--extend 1"; [ -f "$M/.extended" ] && EXT=""; touch "$M/.extended"
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.streamtrain runs/kws6/feats_i "$M" \
    --test-family "$FOLD" \
    --steps 100000 --max-minutes ${MINUTES:-28} --lr 0.002 --eval-every 1000 --mine-every 1000 --keep-every 1000 \
    --dropout 0.1 --weight-decay 0.1 --small-k-frac 0.25 --small-k-max 8 \
    --aug-shift 0.3 --aug-scale 0.1 --aug-noise 0.3 --aug-drop 0.1 $EXT
