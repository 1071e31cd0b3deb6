"""Fresh fold-H material (runs/kws12/banks_fresh, corpus --more rounds 5-9) against what earlier sets held.

Prints per voice and round: keywords (alone / in sentences), keyword-free sentences and their speech minutes, and
how many fresh texts equal an earlier text:
  (a) rounds 1-4 of the same voices (runs/kws2/banks eval/*.more1-4, neg/*_m1-4): the brief's check;
  (b) everything run H's / I's / fold J's test sets read for ked + slt (their eval + neg banks + rounds 1-4);
  (c) any text in any bank under runs/kws2/banks (every voice, training banks included);
  (d) any text in any bank of any earlier run (runs/kws*/banks*/**/*.npz outside runs/kws12: kws2, kws6, kws9).
Keywords said alone are the keyword itself (the same ten texts in every round): counted apart, only their
prosody (festival Duration_Stretch draw) differs. Reads the banks' metadata only (no audio).
"""
import glob
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from essm_stream.kws import voices as V

FRESH, OLD = Path("runs/kws12/banks_fresh"), Path("runs/kws2/banks")
STEMS = ("festival_ked_diphone", "festival_cmu_us_slt_arctic_hts")


def meta(f):
    m = json.loads(str(np.load(f, allow_pickle=False)["meta"]))
    lens = np.load(f, allow_pickle=False)["lengths"]
    return m, lens


def texts(files, kinds=("sent", "neg", "near")):
    out = set()
    for f in files:
        m, _ = meta(f)
        out |= {j["text"].lower() for j in m if j["kind"] in kinds}
    return out


def main():
    r14 = [f for s in STEMS for r in (1, 2, 3, 4) for f in (OLD / f"eval/{s}.more{r}.npz", OLD / f"neg/{s}_m{r}.npz")]
    heldout = r14 + [OLD / f"eval/{s}.npz" for s in STEMS] + [Path(f) for s in STEMS
                                                             for f in glob.glob(str(OLD / f"neg/{s}_0*.npz"))]
    allold = [Path(f) for f in glob.glob(str(OLD / "*/*.npz"))]
    anyrun = [Path(f) for f in glob.glob("runs/kws*/banks*/**/*.npz", recursive=True) if "kws12" not in f]
    sets = {"rounds 1-4": texts(r14), "H/I/J test banks": texts(heldout), "all kws2 banks": texts(allold),
            f"all earlier banks ({len(anyrun)} files)": texts(anyrun)}
    print(f"earlier texts: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    tot = Counter()
    seen_fresh = Counter()
    for s in STEMS:
        for r in (5, 6, 7, 8, 9):
            em, _ = meta(FRESH / f"eval/{s}.more{r}.npz")
            nm, nl = meta(FRESH / f"neg/{s}_m{r}.npz")
            iso = [j for j in em if j["kind"] == "iso"]
            sent = [j["text"].lower() for j in em if j["kind"] == "sent"]
            neg = [j["text"].lower() for j in nm]
            kept_neg = sum(1 for j in nm if not V.has_keyword(j["text"]))
            ov = {k: (sum(t in v for t in sent), sum(t in v for t in neg)) for k, v in sets.items()}
            seen_fresh.update(sent + neg)
            print(f"{s} round {r}: {len(iso)} alone, {len(sent)} in sentences; {len(neg)} keyword-free "
                  f"({kept_neg} kept by load_bank), {nl.sum() / 16000 / 60:.1f} min; equal texts (sentences, "
                  "keyword-free): " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in ov.items()))
            tot.update({"iso": len(iso), "sent": len(sent), "neg": len(neg), "neg_min": nl.sum() / 16000 / 60,
                        **{f"{k} sent": a for k, (a, _) in ov.items()}, **{f"{k} neg": b for k, (_, b) in ov.items()}})
    print("total:", {k: round(v, 1) for k, v in tot.items()})
    print("fresh texts repeated within the fresh rounds:", sum(c - 1 for c in seen_fresh.values() if c > 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
