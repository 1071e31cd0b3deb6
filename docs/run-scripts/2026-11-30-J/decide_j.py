"""J_rule's decision from runs/kws8/eval_j/loso.json (K = 32, clean and 10 dB, ked's keyword-free test speech)."""
import json
J = "ho-festival.ked~festival.lp+festival.machac+festival.mv+festival.slt+flite.slt"
r = json.load(open("runs/kws8/eval_j/loso.json"))["families"][J]
res = {"J": r, "D": r["other_models"]["D"]}
ok = True
for c in ("clean", "10dB"):
    j, d = res["J"]["conditions"][c]["K32"], res["D"]["conditions"][c]["K32"]
    allow = max(d["fa_per_hour_neg"], 2.0) + 1.0 / j["neg_hours"]
    hits_ok, fa_ok = j["hits"] > d["hits"], j["fa_per_hour_neg"] <= allow + 1e-9
    ok &= hits_ok and fa_ok
    print(f"{c}: hits J {j['hits']} vs D {d['hits']} ({'ok' if hits_ok else 'FAIL'}); FA/h J {j['fa_per_hour_neg']:.2f} "
          f"({j['fa_neg']} in {j['neg_hours']:.2f} h) vs allowance max({d['fa_per_hour_neg']:.2f}, 2) + 1/{j['neg_hours']:.2f} "
          f"= {allow:.2f} ({'ok' if fa_ok else 'FAIL'})")
print("thresholds: J", res["J"]["threshold"], "D", res["D"]["threshold"])
print("verdict:", "J replaces D" if ok else "J fails the rule; D stays bundled")
