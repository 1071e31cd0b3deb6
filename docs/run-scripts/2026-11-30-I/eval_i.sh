#!/usr/bin/env bash
# the I rule's evaluation (runs/kws6/I_rule.txt): one program on a sets folder named after fold I (test files +
# fold I's validation), threshold from fold I's validation: <= 10 FA/h keyword-free pooled AND <= 2 FA/h on the
# recorded validation speakers; usage: eval_i.sh NAME PROGRAM [SETS]  -> runs/kws6/models_NAME/<fold>/kws.essm, eval_NAME
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
name=$1 src=$2 sets=${3:-runs/kws6/sets_i} fold="ho-festival.ked+festival.slt~festival.lp+festival.machac+festival.mv"
mkdir -p "runs/kws6/models_$name/$fold"
cp "$src" "runs/kws6/models_$name/$fold/kws.essm"
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream kws-eval --loso --sets "$sets" --models runs/kws6/models_$name \
    --out runs/kws6/eval_$name --hold-out "festival:ked_diphone,festival:cmu_us_slt_arctic_hts~festival:lp_diphone,festival:czech_machac,festival:hy_fi_mv_diphone" \
    --no-pocketsphinx --fa-target 10 --fa-on neg --recorded-fa-target 2
