"""reporting only (after the decision): ked's clean / 10 dB test hits and false-accept events per threshold (K = 32)
beside the slt validation false accepts/h, for J and D, from runs/kws8/eval_j/loso.json."""
import json
J = "ho-festival.ked~festival.lp+festival.machac+festival.mv+festival.slt+flite.slt"
r = json.load(open("runs/kws8/eval_j/loso.json"))["families"][J]
print("model threshold | ked clean hits FA-events | ked 10dB hits FA-events | slt validation FA/h")
for name, m in (("J", r), ("D", r["other_models"]["D"])):
    rec = {round(g["threshold"], 5): g["false_accepts"] / g["hours"] for g in m["val_recorded_neg_curve"]}
    c, c10 = m["conditions"]["clean"], m["conditions"]["10dB"]
    for a, b, a10, b10 in zip(c["K32_kw_curve"], c["K32_neg_curve"], c10["K32_kw_curve"], c10["K32_neg_curve"]):
        if 0.9 <= a["threshold"] <= 0.99:
            print(f"{name} {a['threshold']} | {a['hits']} {b['false_accepts']} | {a10['hits']} {b10['false_accepts']} | "
                  f"{rec[round(a['threshold'], 5)]:.2f}")
