#!/usr/bin/env bash
# reporting only (after the H decision): a program on flite slt's held-out streams (excluded from H's training), thresholds
# from the same espeak-ng validation and rule as eval_h.sh; usage: eval_slt.sh NAME PROGRAM
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
name=$1 src=$2 fold=ho-flite.slt
while pgrep -f banks_slt_more.sh >/dev/null; do sleep 5; done
mkdir -p "runs/kws2/models_$name/$fold"
cp "$src" "runs/kws2/models_$name/$fold/kws.essm"
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream kws-eval --loso --sets runs/kws2/sets_slt --models runs/kws2/models_$name \
    --out runs/kws2/eval_$name --hold-out flite:slt --no-pocketsphinx --fa-target 10 --fa-on neg
