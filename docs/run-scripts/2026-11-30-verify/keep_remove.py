"""The verifier's keep / remove shares read from a kws-eval --verify run (loso.json; reporting only): per program,
test condition and first-stage threshold (0.5 and the program's own rule threshold), for each verifier threshold:
share of the first stage's hits kept, of its keyword-free false accepts removed, of its confusions removed.
Usage: python runs/kws11/keep_remove.py runs/kws11/eval_h [VTH ...]"""
import json, sys
from pathlib import Path
res = json.loads((Path(sys.argv[1]) / "loso.json").read_text())
VS = [float(x) for x in sys.argv[2:]] or [-0.22, -0.20, -0.18, -0.16, -0.14]
for fam, r in res["families"].items():
    models = {r["name"]: r, **r.get("other_models", {})}
    for name, cz in r["cascades"].items():
        pairs = [tuple(p) for p in cz["pairs"]]
        for th1 in (0.5, float(models[name]["threshold"])):
            print(f"{name}, first stage {th1}: kept hits / removed keyword-free FA / removed confusions (counts at no verification)")
            curves = {"validation": (cz["val_kw_curve"], cz["val_neg_curve"])}
            curves.update({c: (v["kw_curve"], v["neg_curve"]) for c, v in cz["conditions"].items()})
            for cond, (kw, ng) in curves.items():
                i0 = pairs.index((th1, None))
                h0, f0, c0 = kw[i0]["hits"], ng[i0]["false_accepts"], kw[i0]["false_accepts"]
                cells = []
                for v in VS:
                    i = pairs.index((th1, v))
                    cells.append(f"{v:+.2f}: {100 * kw[i]['hits'] / max(h0, 1):.0f}% / "
                                 f"{100 * (1 - ng[i]['false_accepts'] / max(f0, 1)):.0f}% / "
                                 f"{100 * (1 - kw[i]['false_accepts'] / max(c0, 1)):.0f}%")
                print(f"  {cond} (hits {h0}, FA {f0}, confusions {c0}): " + "; ".join(cells))
