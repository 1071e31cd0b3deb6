"""kws7, reporting only: D / H (K = 32) and TC-ResNet8 test DET curves read at pocketsphinx's and TC-ResNet8's test
false-accept rates (loso_eval.det_point on runs/kws7/eval_snr/loso.json); nothing here chooses anything."""
import json
from essm_stream.kws import loso_eval as E

r = json.load(open("runs/kws7/eval_snr/loso.json"))["families"]["ho-festival.ked+festival.slt"]
curves = {"D": lambda c: (r["conditions"][c]["K32_kw_curve"], r["conditions"][c]["K32_neg_curve"]),
          "H": lambda c: (r["other_models"]["H"]["conditions"][c]["K32_kw_curve"],
                          r["other_models"]["H"]["conditions"][c]["K32_neg_curve"]),
          "TC": lambda c: (r["tcresnet"][c]["kw_curve"], r["tcresnet"][c]["neg_curve"])}
for c in r["conditions"]:
    ps = r["conditions"][c]["pocketsphinx"]
    tc = r["tcresnet"][c]
    for peer, fa in (("pocketsphinx", ps["neg"]["fa_per_hour"]), ("TC-ResNet8", tc["fa_per_hour_neg"])):
        pts = {m: E.det_point(*curves[m](c), fa) for m in curves if not (m == "TC" and peer == "TC-ResNet8")}
        print(f"{c}: at <= {peer}'s {fa:.1f} FA/h: " + ", ".join(
            f"{m} {p['hits']} ({p['false_accepts']} FA, th {p['threshold']})" for m, p in pts.items()))
