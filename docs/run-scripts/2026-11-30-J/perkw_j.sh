#!/usr/bin/env bash
# reporting only: per-keyword hits and false accepts of J and D on ked's test files, each at its stored fold-J threshold
cd "${ESSM_ROOT:-.}"
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
J="ho-festival.ked~festival.lp+festival.machac+festival.mv+festival.slt+flite.slt"
for m in J D; do
    nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.diagnose perkw-test runs/kws8/models_j$m/$J/kws.essm \
        --sets runs/kws8/sets_j --test-family "$J" > runs/kws8/perkw_j$m.txt
done
