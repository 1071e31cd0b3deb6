#!/usr/bin/env bash
# the H rule's evaluation (runs/kws2/H_rule.txt): one program on the H fold's held-out streams at its validation threshold
# (<= 10 FA/h keyword-free validation speech); usage: eval_h.sh NAME PROGRAM  -> runs/kws2/models_NAME/<fold>/kws.essm, eval_NAME
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
name=$1 src=$2 fold=ho-festival.ked+festival.slt
mkdir -p "runs/kws2/models_$name/$fold"
cp "$src" "runs/kws2/models_$name/$fold/kws.essm"
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream kws-eval --loso --sets runs/kws2/sets_h --models runs/kws2/models_$name \
    --out runs/kws2/eval_$name --hold-out festival:ked_diphone,festival:cmu_us_slt_arctic_hts --no-pocketsphinx \
    --fa-target 10 --fa-on neg
