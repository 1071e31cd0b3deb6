"""Per-speaker clean sets for the between-speaker false-accept spread (issue 9, 2026-11-30 'speakers').

For each of festival's ten voices of other languages (voices.FESTIVAL_OTHER, never heard by D nor by H's
step 28 000): keyword-free speech = a calibration neg bank of 600 sentences (calib.NEG_SENTENCES, calib's own
seed: run I's existing banks for lp / machac / mv, the same recipe for the seven others), keywords = a
calibration keyword bank (calib.KW_SIZES, 8 alone + 8 in sentences per keyword the voice says, respelled as
run I built them) + one more round of the same size with a new seed. Each speaker's keyword stream and
keyword-free stream are composed by loso.build_sets, clean only, into runs/kws9/sets/spk_<speaker>_{kw,neg}_clean.npz.
D-only extras (voices H trained on, D never heard): flite kal / kal16 / rms and festival kal_diphone from
run H's eval banks (keywords) and neg banks (keyword-free).
ked, slt HTS and flite slt reuse fold J's / run H's test sets (runs/kws8, runs/kws2/sets_slt): see speakers.py.
"""
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from essm_stream.kws import calib as CB
from essm_stream.kws import corpus as C
from essm_stream.kws import loso as L
from essm_stream.kws import voices as V

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
OUT = Path("runs/kws9")
BANKS = OUT / "banks"
SETS = OUT / "sets"
RUN_I = Path("runs/kws6/banks/calib")
EXTRA = ["flite:kal", "flite:kal16", "flite:rms", "festival:kal_diphone"]


def bank_paths(v):
    stem = v.replace(":", "_", 1)
    kw_i, neg_i = RUN_I / f"kw_{stem}.npz", RUN_I / f"neg_{stem}.npz"
    kw = kw_i if kw_i.is_file() else BANKS / f"kw_{stem}.npz"
    neg = neg_i if neg_i.is_file() else BANKS / f"neg_{stem}.npz"
    return kw, neg, BANKS / f"kw_{stem}.more1.npz"


def jobs():
    out = []
    for name in V.FESTIVAL_OTHER:
        v = f"festival:{name}"
        kw, neg, more = bank_paths(v)
        out.append((str(kw), v, CB.KW_SIZES["festival"] + (0, 0), C._seed("calib-kw", v), False))
        out.append((str(neg), v, CB.NEG_SENTENCES["festival"], C._seed("calib-neg", v), True))
        out.append((str(more), v, CB.KW_SIZES["festival"] + (0, 0), C._seed("speakers-kw", v), False))
    return out


def sets_job(v):
    sp = V.speaker_of(v) if hasattr(V, "speaker_of") else v
    name = "spk_" + v.replace(":", ".")
    if v in EXTRA:
        kw_items = L._items("runs/kws2/banks", "eval", [v], ("iso", "sent"))
        neg_items = L._neg_items("runs/kws2/banks", [v])
    else:
        kw, neg, more = bank_paths(v)
        kw_items = [j for f in (kw, more) for j in V.load_bank(f) if j["kind"] in ("iso", "sent")]
        neg_items = V.load_bank(neg)
    L.build_sets(BANKS, SETS, name, kw_items, neg_items, None, seed=C._seed("speakers-set", v) % 2**31,
                 snrs=(None,))
    return v, sp, len(kw_items), len(neg_items)


if __name__ == "__main__":
    BANKS.mkdir(parents=True, exist_ok=True)
    SETS.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(2) as ex:
        for path, n, dt in ex.map(C._job, jobs()):
            logging.info("%s: %d utterances in %.0f s", path, n, dt)
        voices = [f"festival:{n}" for n in V.FESTIVAL_OTHER] + (EXTRA if "--no-extra" not in sys.argv else [])
        for r in ex.map(sets_job, voices):
            logging.info("sets %s", r)
