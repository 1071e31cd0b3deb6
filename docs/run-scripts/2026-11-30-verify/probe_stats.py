"""Probe read-out: per model, condition and first-stage threshold, share of true hits kept vs share of
false accepts removed at verifier thresholds (score = ln of pocketsphinx's keyphrase segment prob)."""
import json, sys
from pathlib import Path
import numpy as np
OUT = Path("runs/kws11")
split = sys.argv[1]
dets = json.loads((OUT / f"dets_{split}.json").read_text())
vs = json.loads((OUT / f"vscore_{split}.json").read_text())
sc = {(f, w, round(t, 4)): (s, c) for f, rows in vs.items() for w, t, s, fr, c in rows}
cpu = np.array([c for v in sc.values() for c in [v[1]]])
print(f"verifications {len(cpu)}: CPU ms mean {1e3*cpu.mean():.1f} median {1e3*np.median(cpu):.1f} p90 {1e3*np.percentile(cpu,90):.1f}")
VG = (-0.30, -0.25, -0.22, -0.20, -0.18, -0.16, -0.14, -0.12)
TH1 = {"D": (0.5, 0.9, 0.975), "H": (0.5, 0.9, 0.94)}
if len(sys.argv) > 2:
    TH1 = {"D": (0.5, 0.9), "H": (0.5, 0.9)}
for m, per in dets.items():
    for cond in ("clean", "10dB"):
        for th1 in TH1[m]:
            hit, fan, fak = [], [], []
            hours_n = sum(r["hours"] for f, r in per.items() if f"_neg_{cond}" in f)
            for f, r in per.items():
                if f"_{cond}" not in f:
                    continue
                for lab, p, t, v in r["dets"]:
                    if p < th1:
                        continue
                    s = sc[(f, lab, round(t, 4))][0]
                    (hit if v == "hit" else fan if "_neg_" in f else fak).append(s)
            hit, fan, fak = map(np.array, (hit, fan, fak))
            # AUC hits vs keyword-free FAs
            auc = np.mean([(h > fan).mean() + 0.5 * (h == fan).mean() for h in hit]) if len(fan) and len(hit) else float("nan")
            print(f"{m} {cond} th1={th1}: hits {len(hit)}, kw-free FA {len(fan)} ({len(fan)/hours_n:.1f}/h), confusions {len(fak)}; AUC(hit vs kw-free FA) {auc:.3f}")
            print("   v    : kept hits | removed kw-free FA (left, /h) | removed confusions")
            for v in VG:
                print(f"   {v:+.2f}: {100*(hit>=v).mean():5.1f}% | {100*(fan<v).mean():5.1f}% ({(fan>=v).sum()}, {(fan>=v).sum()/hours_n:.1f}/h) | {100*(fak<v).mean():5.1f}%")
