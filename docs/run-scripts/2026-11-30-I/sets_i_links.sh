#!/usr/bin/env bash
# fold I's sets: run H's test files and run H's whole (espeak-ng) validation, linked under fold I's name beside
# the new recorded validation sets that banks_i.sh writes (runs/kws6/sets_i/val_<fold I>_*_{cf,cg,pf,pg}.npz)
cd "${ESSM_ROOT:-.}"
I="ho-festival.ked+festival.slt~festival.lp+festival.machac+festival.mv" H="ho-festival.ked+festival.slt"
mkdir -p runs/kws6/sets_i
for f in runs/kws2/sets_h/test_${H}_* runs/kws2/sets_h/val_${H}_*; do
    b=$(basename "$f"); ln -sfn "$(readlink -f "$f")" "runs/kws6/sets_i/${b/$H/$I}"
done
# reporting only (not the decision): kws7's 20 / 5 dB test sets of the H fold (/work/signals/kws7_sets_ready), linked too
K7=$(cat /work/signals/kws7_sets_ready 2>/dev/null)
if [ -n "$K7" ]; then
    for f in "$K7"/test_${H}_*_20dB.npz "$K7"/test_${H}_*_5dB.npz; do
        [ -e "$f" ] && ln -sfn "$(readlink -f "$f")" "runs/kws6/sets_i/$(basename "${f/$H/$I}")"
    done
fi
