"""Counts of fold H's fresh test sets (runs/kws12/sets_fresh pooled, runs/kws12/sets_fresh_spk per speaker), read the
way kws-eval reads them (loso.load_condition; loso.speaker_groups for the per-speaker parts). No model is run."""
from collections import Counter
from pathlib import Path

import numpy as np

from essm_stream.kws import data as D
from essm_stream.kws import loso as L

FOLD = "ho-festival.ked+festival.slt"
for d in ("runs/kws12/sets_fresh", "runs/kws12/sets_fresh_spk"):
    print(d)
    for snr in L.SNRS:
        name = L.snr_name(snr)
        kw, neg = L.load_condition(d, "test", FOLD, name)
        for kind, sets in (("kw", kw), ("neg", neg)):
            for spk, ss in L.speaker_groups(sets).items():
                for s in ss:
                    labels = Counter(e.label for e in s["events"] if e.label in D.KEYWORDS)
                    print(f"  {name:>5} {kind:>3} {spk:>9}: {Path(s['path']).name}: {s['meta']['seconds'] / 3600:.3f} h, "
                          f"{sum(labels.values())} keywords ({min(labels.values(), default=0)}-{max(labels.values(), default=0)} "
                          f"per keyword), {sum(e.label == 'speech' for e in s['events'])} keyword-free utterances, "
                          f"{len(s['F'])} feature steps, pcm peak {int(np.abs(s['pcm']).max())}")
                    del s["pcm"], s["F"]
    vals = sorted(p.name for p in Path(d).glob("val_*.npz"))
    print(f"  validation links: {len(vals)}, all resolve: {all((Path(d) / v).resolve().is_file() for v in vals)}")
