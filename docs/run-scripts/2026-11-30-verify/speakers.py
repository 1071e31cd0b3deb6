"""Per-speaker read-out (reporting only, runs/kws11/V_rule.txt): each plain program at its rule threshold and its
cascade at the validation pair (from runs/kws11/eval_{h,j}/loso.json), on runs/kws9/sets' per-speaker sets
(spk_<voice>_{kw,neg}_clean.npz): keyword-free false accepts per hour and hits per speaker.
Usage: python runs/kws11/speakers.py EVAL_DIR [...] -> runs/kws11/speakers.md"""
import json, sys
from pathlib import Path
import numpy as np
from essm_stream.kws import loso as L, loso_eval as E
from essm_stream.program import StreamProgram
from essm_stream.kws.spotter import KeywordSpotter

SETS = Path("runs/kws9/sets")
voices = sorted({p.name[len("spk_"):].rsplit("_", 2)[0] for p in SETS.glob("spk_*_neg_clean.npz")})
lines = []
for ev in sys.argv[1:]:
    res = json.loads((Path(ev) / "loso.json").read_text())
    for fam, r in res["families"].items():
        models = {r["name"]: r, **r.get("other_models", {})}
        for name, m in models.items():
            cz = r["cascades"][name]
            prog = StreamProgram.load(m["program"])
            sp = KeywordSpotter(prog)
            pairs = [(float(m["threshold"]), None), (cz["th1"], cz["vth"])]
            cfg = {"kind": "pocketsphinx", "pre_s": cz["verifier"]["pre_s"], "post_s": cz["verifier"]["post_s"]}
            lines += [f"**{Path(ev).name}: {name}** plain at {m['threshold']} vs cascade (first stage {cz['th1']}, "
                      f"verifier {cz['vth']}), K = 32, clean", "",
                      "| speaker | keyword-free h | plain FA/h (events) | cascade FA/h (events) | plain hits | cascade hits |",
                      "|---|---|---|---|---|---|"]
            tot = np.zeros(4)
            fas = {0: [], 1: []}
            for v in voices:
                row = []
                for kind in ("neg", "kw"):
                    s = L.load_set(SETS / f"spk_{v}_{kind}_clean.npz")
                    rows, = E.cascade_set_rows(prog, sp, [s], prog.k_max, cfg, pairs, 2, "runs/kws11/verify_cache")
                    row.append(rows)
                n, k = row
                h = n[0]["hours"]
                for i in (0, 1):
                    fas[i].append(n[i]["false_accepts"] / h)
                lines.append(f"| {v} | {h:.2f} | {n[0]['false_accepts'] / h:.1f} ({n[0]['false_accepts']}) | "
                             f"{n[1]['false_accepts'] / h:.1f} ({n[1]['false_accepts']}) | {k[0]['hits']}/{k[0]['keywords']} | "
                             f"{k[1]['hits']}/{k[1]['keywords']} |")
                print(lines[-1], flush=True)
            lines += [f"| median / max FA/h over speakers | | {np.median(fas[0]):.1f} / {max(fas[0]):.1f} | "
                      f"{np.median(fas[1]):.1f} / {max(fas[1]):.1f} | | |", ""]
Path("runs/kws11/speakers.md").write_text("\n".join(lines))
print("\n".join(lines))
