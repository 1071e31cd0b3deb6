"""Table: pocketsphinx (ps_test.json) vs D / H (kws-eval loso.json K=32 curves) on the H fold's test streams."""
import json
from essm_stream.kws import loso_eval as E
ps = json.load(open("runs/kws5/ps_test.json"))
ev = {m: json.load(open(f"runs/kws2/eval_h{m}/loso.json"))["families"]["ho-festival.ked+festival.slt"] for m in "DH"}
for cond in ("clean", "10dB"):
    print(f"== {cond}")
    for th, r in sorted(ps.items(), key=lambda kv: float(kv[0])):
        if f"kw_{cond}" not in r or f"neg_{cond}" not in r:
            continue
        k, n = r[f"kw_{cond}"], r[f"neg_{cond}"]
        fa = n["false_accepts"] / n["hours"]
        line = (f"ps {th}: {k['hits']}/{k['keywords']} hits, kw-stream FA {k['false_accepts']}, keyword-free "
                f"{n['false_accepts']} in {n['hours']:.2f} h = {fa:.1f}/h (first 600 s: {n['first600']['false_accepts']})")
        for m in "DH":
            c = ev[m]["conditions"][cond]
            p = E.det_point(c["K32_kw_curve"], c["K32_neg_curve"], fa)
            line += f" | {m} at <= {fa:.1f}/h: {p['hits']} ({p['false_accepts']} FA, th {p['threshold']})"
        print(line)
