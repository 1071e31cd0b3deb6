#!/usr/bin/env bash
# run H: the product model's speaker fold (held out: festival ked_diphone + slt HTS; flite slt excluded).
# START (d or g9) chosen on the fold's validation (runs/kws2/cal_select_h_start.jsonl), continued with --extend 1 and
# run F/G's recipe (feature augmentation, small-K share, dropout, budget dropout) on runs/kws2/feats_h:
# G's streams (espeak-ng variants, flite awb) + 16 wide-speaker renders of flite kal, kal16, rms, festival kal_diphone
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
M=runs/kws2/models_h/ho-festival.ked+festival.slt
mkdir -p $M
if [ ! -f $M/last.safetensors ]; then
    case ${START:?START=d or g9} in
        d) cp runs/kws2/models_d/festival/last.safetensors $M/ ;;
        g9) cp runs/kws2/models_g/festival/step_9000.safetensors $M/last.safetensors ;;
    esac
    cp runs/kws2/models_d/festival/norm.json $M/            # D, F, G share D's normalisation
fi
EXT="--extend 1"; [ -f $M/.extended ] && EXT=""; touch $M/.extended
exec nice -n 5 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.streamtrain runs/kws2/feats_h $M \
    --test-family festival:ked_diphone,festival:cmu_us_slt_arctic_hts \
    --steps 100000 --max-minutes ${MINUTES:-20} --lr 0.002 --eval-every 1000 --mine-every 1000 --keep-every 1000 \
    --dropout 0.1 --weight-decay 0.1 --small-k-frac 0.25 --small-k-max 8 \
    --aug-shift 0.3 --aug-scale 0.1 --aug-noise 0.3 --aug-drop 0.1 $EXT
