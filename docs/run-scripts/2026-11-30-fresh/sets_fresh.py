"""Fold H's fresh test sets (2026-11-30 evening) from runs/kws12/banks_fresh ONLY (corpus --more rounds 5-9).

Built with loso's own functions, exactly as `loso BANKS OUT --hold-out <fold H> --part test --snrs clean,20,10,5
--neg-noisy-s 1800` would (loso.build_family_sets' test part: the voices' eval/*.more* keywords, alone and in
sentences; their neg/* keyword-free sentences, every 7th kept apart as the babble pool), with ONE change: the
composition / noise seed. build_family_sets seeds with 11 + voices.fold_seed(fold), the seed of run H's
runs/kws2/sets_h; with the same 1 000 keyword slots that seed would repeat sets_h's stream layout slot for slot
(which voice, keyword, alone / in sentence, level and gap at each position, and the first noise segment), so
here the seed is corpus._seed("fresh-sets", fold, tag), new for each set.

  pooled      -> runs/kws12/sets_fresh/test_<fold>_{kw,neg}_{clean,20dB,10dB,5dB}.npz  (ked + slt in one stream)
  per speaker -> runs/kws12/sets_fresh_spk/test_<fold>_{kw,neg}_<snr>.{ked,slt}.npz    (loso.load_condition reads
                 the parts of a condition together; loso.speaker_groups splits them per speaker). Each speaker's
                 babble pool is its own keyword-free speech, as `loso --hold-out <that voice>` builds it; 1800 s
                 of keyword-free speech per speaker at each noisy SNR.
Usage: python runs/kws12/sets_fresh.py {pooled|ked|slt}
"""
import logging
import sys

from essm_stream.kws import corpus as C
from essm_stream.kws import loso as L
from essm_stream.kws import voices as V

BANKS = "runs/kws12/banks_fresh"
FOLD = V.fold_name("festival:ked_diphone,festival:cmu_us_slt_arctic_hts")
SNRS = (None, 20.0, 10.0, 5.0)
VOICES = {"ked": "festival:ked_diphone", "slt": "festival:cmu_us_slt_arctic_hts"}


def build(voices, out, tag=""):
    kw = L._items(BANKS, "eval", voices, ("iso", "sent"))
    neg_all = L._neg_items(BANKS, voices)
    pool = [j["audio"] for j in neg_all[::7]] or None
    neg = [j for i, j in enumerate(neg_all) if i % 7]
    seed = C._seed("fresh-sets", FOLD, tag) % 2**31
    logging.info("%s%s: %d keywords, %d keyword-free sentences (+%d babble), seed %d", out, tag, len(kw), len(neg),
                 len(neg_all) - len(neg), seed)
    return L.build_sets(BANKS, out, f"test_{FOLD}", kw, neg, pool, seed=seed, neg_noisy_s=1800.0, snrs=SNRS, tag=tag)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    what = sys.argv[1]
    if what == "pooled":
        build(list(V.fold(FOLD)["test"]), "runs/kws12/sets_fresh")
    else:
        build([VOICES[what]], "runs/kws12/sets_fresh_spk", tag=f".{what}")
