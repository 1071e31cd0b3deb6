#!/usr/bin/env bash
# fold J's sets. Test: festival ked_diphone alone (its eval bank + 4 more rounds, keyword-free neg bank + 4 more
# rounds), built exactly as run H's test sets (runs/kws2/sets_h.sh: loso --part test, same banks and noise
# machinery), clean and 10 dB (30 min keyword-free at 10 dB), named test_<fold J>_*.
# Validation (new): the slt speaker's keyword and keyword-free streams through festival slt HTS (built the same
# way into runs/kws8/sets_slth, then linked with tag slth) and through flite slt (runs/kws2/sets_slt, tag sltf),
# clean and 10 dB; plus run I's whole validation (runs/kws6/sets_i val_*), linked under fold J's name.
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
J="ho-festival.ked~festival.lp+festival.machac+festival.mv+festival.slt+flite.slt"
I="ho-festival.ked+festival.slt~festival.lp+festival.machac+festival.mv"
SPEC="festival:ked_diphone~festival:cmu_us_slt_arctic_hts,flite:slt,festival:lp_diphone,festival:czech_machac,festival:hy_fi_mv_diphone"
mkdir -p runs/kws8/sets_j runs/kws8/sets_slth
nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.loso runs/kws2/banks runs/kws8/sets_j \
    --hold-out "$SPEC" --part test --snrs ${SNRS:-clean,10} --neg-noisy-s 1800 > runs/kws8/sets_j_test.log 2>&1 &
nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.loso runs/kws2/banks runs/kws8/sets_slth \
    --hold-out festival:cmu_us_slt_arctic_hts --part test --snrs clean,10 --neg-noisy-s 1800 > runs/kws8/sets_slth.log 2>&1 &
wait
for f in runs/kws8/sets_slth/test_ho-festival.slt_*.npz; do          # test_<fold>_<kind>_<snr>.npz -> val_<J>_<kind>_<snr>_slth.npz
    b=$(basename "$f" .npz); ln -sfn "$(readlink -f "$f")" "runs/kws8/sets_j/val_${J}_${b#test_ho-festival.slt_}_slth.npz"
done
for f in runs/kws2/sets_slt/test_ho-flite.slt_*.npz; do
    b=$(basename "$f" .npz); ln -sfn "$(readlink -f "$f")" "runs/kws8/sets_j/val_${J}_${b#test_ho-flite.slt_}_sltf.npz"
done
for f in runs/kws6/sets_i/val_${I}_*.npz; do
    b=$(basename "$f"); ln -sfn "$(readlink -f "$f")" "runs/kws8/sets_j/${b/$I/$J}"
done
