#!/usr/bin/env bash
# kws4: K = 32 / 8 / 4 hits at matched keyword-free false-accept rates (diagnose det-k), held-out test streams only.
# usage: detk.sh [--fine]  -> runs/kws4/detk_{fest,h}[_fine].{md,json,png}
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
sfx=; boot=0; [ "$1" = --fine ] && sfx=_fine && boot=2000
det() { out=$1; shift
  nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.diagnose det-k "$@" --K 32,8,4 --caps 2,10,50 \
      --conditions clean,10dB --boot $boot --json runs/kws4/detk_$out$sfx.json --plot runs/kws4/detk_$out$sfx.png > runs/kws4/detk_$out$sfx.md; }
det fest essm_stream/assets/kws_default.essm --name D --sets runs/kws2/sets --test-family festival $1
det h essm_stream/assets/kws_default.essm runs/kws2/cal_programs/models_h_step_28000/kws.essm --name D --name H \
    --sets runs/kws2/sets_h --test-family festival:ked_diphone,festival:cmu_us_slt_arctic_hts $1
