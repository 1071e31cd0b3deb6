#!/usr/bin/env bash
# reporting only: flite slt's held-out sets (runs/kws2/sets_slt, banks_slt_more.sh) under fold I's name, with fold I's
# validation (every val_ file of runs/kws6/sets_i), so eval_i.sh NAME PROGRAM runs/kws6/sets_slt_i reads them at the
# same validation threshold as on ked + slt HTS
cd "${ESSM_ROOT:-.}"
I="ho-festival.ked+festival.slt~festival.lp+festival.machac+festival.mv"
mkdir -p runs/kws6/sets_slt_i
for f in runs/kws2/sets_slt/test_ho-flite.slt_*; do
    b=$(basename "$f"); ln -sfn "$(readlink -f "$f")" "runs/kws6/sets_slt_i/${b/ho-flite.slt/$I}"
done
for f in runs/kws6/sets_i/val_${I}_*; do ln -sfn "$(readlink -f "$f")" "runs/kws6/sets_slt_i/$(basename "$f")"; done
