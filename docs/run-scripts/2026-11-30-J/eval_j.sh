#!/usr/bin/env bash
# the J rule's evaluation (runs/kws8/J_rule.txt): programs on fold J's test files (ked alone), each at its threshold
# from fold J's validation (<= 10 FA/h keyword-free pooled AND <= 2 FA/h on slt's keyword-free speech, both engines);
# usage: eval_j.sh OUTNAME NAME=PROGRAM [NAME=PROGRAM ...] -> runs/kws8/models_j<NAME>/<fold>/kws.essm, runs/kws8/eval_OUTNAME
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
J="ho-festival.ked~festival.lp+festival.machac+festival.mv+festival.slt+flite.slt"
SPEC="festival:ked_diphone~festival:cmu_us_slt_arctic_hts,flite:slt,festival:lp_diphone,festival:czech_machac,festival:hy_fi_mv_diphone"
outname=$1; shift
models=()
for nm in "$@"; do
    name=${nm%%=*} src=${nm#*=}
    mkdir -p "runs/kws8/models_j$name/$J"
    cp "$src" "runs/kws8/models_j$name/$J/kws.essm"
    models+=("$name=runs/kws8/models_j$name")
done
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream kws-eval --loso --sets ${SETS:-runs/kws8/sets_j} --models "${models[@]}" \
    --out runs/kws8/eval_$outname --hold-out "$SPEC" --no-pocketsphinx --fa-target 10 --fa-on neg \
    --recorded-fa-target 2 --recorded-voices festival:cmu_us_slt_arctic_hts,flite:slt
