#!/usr/bin/env bash
# kws11 design 2 (runs/kws11/V_rule.txt): fold J (validate on slt + J's validation, test ked alone), D and J plain
# (J_rule's thresholds) and as first stages of the cascade (pair by J_rule's rule: <= 10 FA/h pooled keyword-free
# and <= 2 on slt's), pocketsphinx alone at the given 1e20 (decoded here: no earlier run decoded ked's files).
cd "${ESSM_ROOT:-.}"
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
F="ho-festival.ked~festival.lp+festival.machac+festival.mv+festival.slt+flite.slt"
SPEC="festival:ked_diphone~festival:cmu_us_slt_arctic_hts,flite:slt,festival:lp_diphone,festival:czech_machac,festival:hy_fi_mv_diphone"
mkdir -p runs/kws11/eval_j
echo '{"old": {}}' > "runs/kws11/eval_j/extras_$F.json"
exec nice -n 10 ${PYTHON:-/work/main/.venv/bin/python} -m essm_stream kws-eval --loso --sets runs/kws8/sets_j \
    --models D=runs/kws11/models_jD J=runs/kws11/models_jJ --out runs/kws11/eval_j --hold-out "$SPEC" \
    --fa-target 10 --fa-on neg --recorded-fa-target 2 --recorded-voices festival:cmu_us_slt_arctic_hts,flite:slt \
    --ps-threshold 1e20 --ps-neg-s 0 --ps-cache runs/kws11/ps_cache_j --ps-workers 2 \
    --verify pocketsphinx --verify-cache runs/kws11/verify_cache
