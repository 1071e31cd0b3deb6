#!/usr/bin/env bash
# run I: wide-speaker renders (rooms, noise, microphones, --speaker wide) of festival's newly trained voices of
# other languages, 16 renders each as run H's new voices had (render_h.sh); babble never from the held-out
# speakers (ked, slt) nor the fold's recorded validation speakers (lp, machac, mv): render --hold-out FOLD_I
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
FOLD="festival:ked_diphone,festival:cmu_us_slt_arctic_hts~festival:lp_diphone,festival:czech_machac,festival:hy_fi_mv_diphone"
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.render runs/kws6/banks runs/kws6/feats_iwide --workers ${WORKERS:-2} \
    --speaker wide --seed 61 --renders '{"festival": '${RENDERS:-16}'}' \
    --voices festival:pc_diphone,festival:czech_dita,festival:czech_krb,festival:czech_ph,festival:suo_fi_lj_diphone,festival:msu_ru_nsh_clunits,festival:upc_ca_ona_hts \
    --hold-out "$FOLD"
