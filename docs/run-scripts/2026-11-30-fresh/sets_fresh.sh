#!/usr/bin/env bash
# fold H's fresh test sets from runs/kws12/banks_fresh only (see sets_fresh.py): pooled ked + slt, and one set per
# speaker (parts .ked / .slt), clean / 20 / 10 / 5 dB, 1800 s of keyword-free speech per noisy SNR; two processes
# at nice 10. Then the validation links, exactly the targets of runs/kws2/sets_h/val_*.
cd "${ESSM_ROOT:-/work/wt/kws}"
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
PY=${PYTHON:-/work/main/.venv/bin/python}
nice -n 10 $PY runs/kws12/sets_fresh.py pooled > runs/kws12/sets_fresh_pooled.log 2>&1 &
(nice -n 10 $PY runs/kws12/sets_fresh.py ked && nice -n 10 $PY runs/kws12/sets_fresh.py slt) > runs/kws12/sets_fresh_spk.log 2>&1 &
wait
for d in runs/kws12/sets_fresh runs/kws12/sets_fresh_spk; do
    for f in runs/kws2/sets_h/val_*.npz; do ln -sfn "$(readlink "$f")" "$d/$(basename "$f")"; done
done
