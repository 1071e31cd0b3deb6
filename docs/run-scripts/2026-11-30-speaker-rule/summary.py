"""Summary of the kws10 speaker-rule demonstration (runs/kws10/RULE.txt): per direction, model and rule, the
threshold, the validation statistics at it, and the held-out speakers' read-out (K = 32) from kws-eval's loso.json.
Writes runs/kws10/summary.md. Run from the repository root after runs/kws10/demo.sh (4 runs)."""
import json
from pathlib import Path

import numpy as np

OUT = Path("runs/kws10")
lines = ["| validates → read | model | rule | threshold | validation: pooled FA/h; 0.8-q speaker FA/h (worst) | "
         "held-out speakers over 2 + 1/h | held-out: hits (median per speaker), FA/h pooled (events / h) | "
         "held-out per speaker FA/h (events) |", "|---|---|---|---|---|---|---|---|"]
for tag in ("AvB", "BvA"):
    for m in ("D", "H28"):
        for rule in ("pool", "spk"):
            res = json.loads((OUT / f"eval_{tag}_{rule}" / "loso.json").read_text())
            r = next(iter(res["families"].values()))
            r = r if r.get("name") == m else r["other_models"][m]
            v = r["val_choice"]
            c = r["conditions"]["clean"]
            by, t = c["K32_speakers"], c["K32"]
            over = [k for k, d in by.items() if d["fa_neg"] / d["neg_hours"] > 2 + 1 / d["neg_hours"]]
            q = (f"{v['speaker_q_fa_per_hour']:.1f} ({max(v['speaker_fa_per_hour'].values()):.1f})"
                 if "speaker_q_fa_per_hour" in v else "n/a")
            per = ", ".join(f"{k} {d['fa_per_hour_neg']:.1f} ({d['fa_neg']})" for k, d in by.items())
            lines.append(f"| {tag[0]} → {tag[2]} | {m} | {'pooled <= 2' if rule == 'pool' else 'pooled <= 10 + 0.8-q speaker <= 2'} "
                         f"| {r['threshold']} | {v['neg_fa_per_hour']:.1f}; {q} | {len(over)} of {len(by)}"
                         f"{' (' + ', '.join(over) + ')' if over else ''} | {100 * t['hit_rate']:.1f}% "
                         f"({100 * np.median([d['hit_rate'] for d in by.values()]):.0f}%), "
                         f"{t['fa_per_hour_neg']:.1f} ({t['fa_neg']} / {t['neg_hours']:.2f}) | {per} |")
text = "\n".join(lines) + "\n"
(OUT / "summary.md").write_text(text)
print(text)
