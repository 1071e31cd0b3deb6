"""Between-speaker spread of false accepts / hits at FIXED thresholds (issue 9, 2026-11-30 'speakers').

D (the bundle) and H's step 28 000 over each unheard recorded speaker's clean keyword stream and clean
keyword-free stream, K = 32, one engine pass per (model, stream); every threshold from loso.fast_replay
(loso.sweep_thresholds). Writes runs/kws9/speakers.json, speakers.md and docs/img/kws_speaker_fa.png.
Run from the repository root: PYTHONPATH=. python runs/kws9/speakers.py  (build_sets.py first).
"""
import itertools
import json
from pathlib import Path

import numpy as np

from essm_stream.kws import calib as CB
from essm_stream.kws import loso as L
from essm_stream.kws.spotter import KeywordSpotter
from essm_stream.program import StreamProgram

J = "ho-festival.ked~festival.lp+festival.machac+festival.mv+festival.slt+flite.slt"
S9 = "runs/kws9/sets/spk_"
# voice -> (speaker, keyword set, keyword-free set); slt is one person through two engines
VOICES = {"festival.ked": ("ked", f"runs/kws8/sets_j/test_{J}_kw_clean.npz", f"runs/kws8/sets_j/test_{J}_neg_clean.npz"),
          "festival.slt": ("slt", "runs/kws8/sets_slth/test_ho-festival.slt_kw_clean.npz",
                           "runs/kws8/sets_slth/test_ho-festival.slt_neg_clean.npz"),
          "flite.slt": ("slt", "runs/kws2/sets_slt/test_ho-flite.slt_kw_clean.npz",
                        "runs/kws2/sets_slt/test_ho-flite.slt_neg_clean.npz")}
for v, s in (("lp_diphone", "lp"), ("pc_diphone", "pc"), ("czech_dita", "dita"), ("czech_krb", "krb"),
             ("czech_machac", "machac"), ("czech_ph", "ph"), ("suo_fi_lj_diphone", "lj"), ("hy_fi_mv_diphone", "mv"),
             ("msu_ru_nsh_clunits", "nsh"), ("upc_ca_ona_hts", "ona")):
    VOICES[f"festival.{v}"] = (s, f"{S9}festival.{v}_kw_clean.npz", f"{S9}festival.{v}_neg_clean.npz")
EXTRA = {f"{f}.{v}": (v, f"{S9}{f}.{v}_kw_clean.npz", f"{S9}{f}.{v}_neg_clean.npz")      # D never heard; H trained on
         for f, v in (("flite", "kal"), ("flite", "kal16"), ("flite", "rms"), ("festival", "kal_diphone"))}
MODELS = {"D": ("essm_stream/assets/kws_default.essm", 0.975),
          "H28": ("runs/kws2/cal_programs/models_h_step_28000/kws.essm", 0.94)}
FIXED = (0.93, 0.95, 0.97, 0.99)
TH = tuple(sorted(set(np.round(np.concatenate([np.arange(0.80, 0.99751, 0.0025), [0.9985, 0.999, 0.9995, 0.9999]]), 4))))
CAP = 2.0


def curves():
    out = {}
    for m, (path, _) in MODELS.items():
        prog = StreamProgram.load(path)
        sp = KeywordSpotter(prog)
        for v, (spk, kw, neg) in {**VOICES, **(EXTRA if m == "D" else {})}.items():
            for kind, f in (("kw", kw), ("neg", neg)):
                s = CB.load_light(f)
                Y = L.engine_outputs(prog, L.normalise(prog, s["F"]), 32)
                rows = L.sweep_thresholds(sp, Y, s["levels"], s["times"], s["events"], s["seconds"], TH)
                out.setdefault(m, {}).setdefault(v, {})[kind] = [
                    {k: r[k] for k in ("threshold", "hits", "keywords", "false_accepts", "hours")} for r in rows]
                print(m, v, kind, round(s["seconds"] / 3600, 3), flush=True)
    return out


def per_speaker(cur, m, extra=False):
    """speaker -> arrays over TH: FA events, hours (keyword-free), hits, keywords (voices of a speaker pooled)."""
    sp = {}
    for v, (spk, _, _) in {**VOICES, **(EXTRA if extra else {})}.items():
        if v not in cur[m]:
            continue
        d = sp.setdefault(spk, {"fa": 0, "h": 0.0, "hits": 0, "kw": 0, "voices": []})
        d["fa"] = d["fa"] + np.array([r["false_accepts"] for r in cur[m][v]["neg"]])
        d["h"] += cur[m][v]["neg"][0]["hours"]
        d["hits"] = d["hits"] + np.array([r["hits"] for r in cur[m][v]["kw"]])
        d["kw"] += cur[m][v]["kw"][0]["keywords"]
        d["voices"].append(v)
    return sp


def first_ok(fah, cap=CAP):
    """index of the lowest threshold from which FA/h stays <= cap at every higher threshold of the grid"""
    bad = np.nonzero(fah > cap)[0]
    return 0 if len(bad) == 0 else (bad[-1] + 1 if bad[-1] + 1 < len(fah) else None)


def dispersion(sp, i):
    """Pearson chi2 / df of the speakers' event counts at grid index i against one common rate (the pooled
    rate times each speaker's hours), and its p-value: is the spread more than Poisson counting noise?"""
    from scipy.stats import chi2
    o = np.array([sp[s]["fa"][i] for s in sp], dtype=float)
    h = np.array([sp[s]["h"] for s in sp])
    e = o.sum() / h.sum() * h
    if o.sum() == 0:
        return 0.0, 1.0
    x = float(((o - e) ** 2 / e).sum())
    return x / (len(o) - 1), float(chi2.sf(x, len(o) - 1))


def rule_sim(sp, n, rule):
    """Every n-speaker validation subset and every other speaker as the test: the threshold = the lowest grid
    threshold from which the validation statistic (max: the worst speaker's FA/h; pooled: all events / all hours)
    stays <= 2 (p80: the 80th-percentile validation speaker's FA/h, inverted CDF). Returns the share of (subset, test speaker) pairs whose test FA/h > 2, > 2 + 1/hours, and the
    median test hit rate."""
    names = sorted(sp)
    over, over_allow, hits, ths = 0, 0, [], []
    tot = 0
    for val in itertools.combinations(names, n):
        if rule == "max":
            stat = np.max([sp[s]["fa"] / sp[s]["h"] for s in val], axis=0)
        elif rule == "p80":            # the 80th-percentile validation speaker (the worst one for n <= 4)
            stat = np.percentile([sp[s]["fa"] / sp[s]["h"] for s in val], 80, axis=0, method="inverted_cdf")
        else:
            stat = sum(sp[s]["fa"] for s in val) / sum(sp[s]["h"] for s in val)
        i = first_ok(stat)
        if i is None:
            i = len(TH) - 1
        for t in names:
            if t in val:
                continue
            fa = sp[t]["fa"][i] / sp[t]["h"]
            over += fa > CAP
            over_allow += sp[t]["fa"][i] > (CAP + 1 / sp[t]["h"]) * sp[t]["h"]
            hits.append(sp[t]["hits"][i] / sp[t]["kw"])
            ths.append(TH[i])
            tot += 1
    return {"n": n, "rule": rule, "pairs": tot, "test_over_2": over / tot, "test_over_allowance": over_allow / tot,
            "median_test_hit_rate": float(np.median(hits)), "median_threshold": float(np.median(ths))}


def main():
    cj = Path("runs/kws9/curves.json")
    cur = json.loads(cj.read_text()) if cj.is_file() else curves()
    cj.write_text(json.dumps(cur))
    res, md = {"thresholds": TH}, []
    for m, (_, rule_th) in MODELS.items():
        sp = per_speaker(cur, m)
        ths = FIXED + (rule_th,)
        idx = [TH.index(t) for t in ths]
        md.append(f"\n**{m}** (K = 32, clean; FA/h = false accepts per hour of keyword-free speech, events in brackets; "
                  f"hits = share of the speaker's keywords found; rule threshold {rule_th})\n")
        md.append("| speaker (hours keyword-free, keywords) | " + " | ".join(f"{t}: FA/h, hits" for t in ths)
                  + " | first ≤ 2 FA/h: threshold, hits |")
        md.append("|---|" + "---|" * (len(ths) + 1))
        table = {}
        for s in sorted(sp, key=lambda s: -sp[s]["fa"][idx[1]] / sp[s]["h"]):
            d = sp[s]
            fah = d["fa"] / d["h"]
            i0 = first_ok(fah)
            cells = [f"{fah[i]:.1f} ({d['fa'][i]}), {100 * d['hits'][i] / d['kw']:.0f}%" for i in idx]
            fo = "none" if i0 is None else f"{TH[i0]}, {100 * d['hits'][i0] / d['kw']:.0f}%"
            md.append(f"| {s} ({d['h']:.2f} h, {d['kw']}) | " + " | ".join(cells) + f" | {fo} |")
            table[s] = {"hours": d["h"], "keywords": d["kw"], "voices": d["voices"],
                        "fa": d["fa"].tolist(), "hits": d["hits"].tolist(),
                        "first_le2": None if i0 is None else TH[i0]}
        md.append("| **spread over speakers: median / 80th pct / min / max FA/h** | " + " | ".join(
            "{:.1f} / {:.1f} / {:.1f} / {:.1f}".format(*(f(np.array([sp[s]["fa"][i] / sp[s]["h"] for s in sp])) for f in (
                np.median, lambda x: np.percentile(x, 80, method="inverted_cdf"), np.min, np.max))) for i in idx)
            + " | median first ≤ 2: {} |".format(np.median([table[s]["first_le2"] or 1.0 for s in table])))
        md.append("| hit rate over speakers: median / min / max | " + " | ".join(
            "{:.0f} / {:.0f} / {:.0f}%".format(*(f(np.array([100 * sp[s]["hits"][i] / sp[s]["kw"] for s in sp]))
                                                for f in (np.median, np.min, np.max))) for i in idx) + " | |")
        pooled_fa = sum(sp[s]["fa"] for s in sp) / sum(sp[s]["h"] for s in sp)
        md.append("| more spread than counting noise? Poisson dispersion chi2 / df, p (one rate for all speakers) | "
                  + " | ".join("{:.1f}, p = {:.2g}".format(*dispersion(sp, i)) for i in idx) + " | |")
        md.append(f"\npooled over the {len(sp)} speakers: " + ", ".join(
            f"{t}: {pooled_fa[i]:.1f} FA/h" for t, i in zip(ths, idx)))
        sims = [rule_sim(sp, n, r) for r in ("pooled", "max", "p80") for n in (1, 2, 3, 4, 6, 8)
                if not (r == "p80" and n < 6)]
        md.append("\nthreshold rule simulated (every validation subset of n speakers, every other speaker tested): "
                  "rule | n | share of test speakers > 2 FA/h | > 2 + 1/h | median test hits | median threshold")
        for r in sims:
            md.append(f"- {r['rule']} | {r['n']} | {100 * r['test_over_2']:.0f}% | {100 * r['test_over_allowance']:.0f}% | "
                      f"{100 * r['median_test_hit_rate']:.0f}% | {r['median_threshold']} ({r['pairs']} pairs)")
        res[m] = {"speakers": table, "rule_sim": sims}
        if m == "D":
            ex = per_speaker(cur, m, extra=True)
            md.append("\nD on voices H trained on (D never heard them): " + "; ".join(
                f"{s} ({ex[s]['h']:.2f} h, {ex[s]['kw']} kw): " + ", ".join(
                    f"{t} {ex[s]['fa'][i] / ex[s]['h']:.1f} ({ex[s]['fa'][i]}) {100 * ex[s]['hits'][i] / ex[s]['kw']:.0f}%"
                    for t, i in zip(ths, idx)) for s in ex if s not in sp))
    Path("runs/kws9/speakers.json").write_text(json.dumps(res, indent=1, default=float))
    Path("runs/kws9/speakers.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    plot(cur)


def plot(cur):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True, dpi=90)
    t = np.array(TH)
    for ax, (m, (_, rule_th)) in zip(axs, MODELS.items()):
        sp = per_speaker(cur, m)
        for s in sorted(sp):
            fah = sp[s]["fa"] / sp[s]["h"]
            style = "-" if s in ("ked", "slt") else "--"
            ax.plot(t, np.maximum(fah, 0.1), style, lw=1.2, label=s)
        ax.axhline(CAP, color="k", lw=0.8, ls=":")
        ax.axvline(rule_th, color="grey", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlim(0.88, 0.9999)
        ax.set_title(f"{m} (rule threshold {rule_th})", fontsize=10)
        ax.set_xlabel("threshold")
    axs[0].set_ylabel("false accepts / h, keyword-free (0 drawn at 0.1)")
    axs[1].legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig("docs/img/kws_speaker_fa.png")


if __name__ == "__main__":
    main()
