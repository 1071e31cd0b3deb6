#!/usr/bin/env bash
# run I: utterance banks of festival's voices of other languages (kws/voices.FESTIVAL_OTHER), keywords through
# their verified respellings (essm_stream/kws/respell.json). Training voices: the family's training bank sizes
# (corpus.TRAIN_SIZES["festival"]); validation voices (fold I's '~' part): calibration banks (calib.KW_SIZES /
# NEG_SENTENCES["festival"]) and their validation sets, as synthesised (cf, cg) and re-spoken by random speakers
# (pf, pg), clean and 10 dB.
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
FOLD="festival:ked_diphone,festival:cmu_us_slt_arctic_hts~festival:lp_diphone,festival:czech_machac,festival:hy_fi_mv_diphone"
mkdir -p runs/kws6/banks/train
nice -n 10 ${PYTHON:-.venv/bin/python} - <<'PY'
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from essm_stream.kws import corpus as C
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
TRAIN = ["pc_diphone", "czech_dita", "czech_krb", "czech_ph", "suo_fi_lj_diphone", "msu_ru_nsh_clunits", "upc_ca_ona_hts"]
out = Path("runs/kws6/banks/train")
jobs = [(str(out / f"festival_{v}.npz"), f"festival:{v}", C.TRAIN_SIZES["festival"], C._seed("train", f"festival:{v}"), False)
        for v in TRAIN]
with ProcessPoolExecutor(2) as ex:
    for path, n, dt in ex.map(C._job, jobs):
        logging.info("%s: %d utterances in %.0f s", path, n, dt)
PY
# festival kal_diphone's training bank: babble for the new training voices (as in run H); never ked / slt / validation voices
ln -sf "$PWD/runs/kws2/banks/train/festival_kal_diphone.npz" runs/kws6/banks/train/
exec nice -n 10 ${PYTHON:-.venv/bin/python} -m essm_stream.kws.calib runs/kws6/banks runs/kws6/sets_i --family "$FOLD" \
    --only-family festival --tags cf,cg,pf,pg --workers 2
