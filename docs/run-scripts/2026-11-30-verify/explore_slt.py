"""EXPLORATORY, written after designs 1-2's test numbers (runs/kws11/V_rule.txt) were known: reporting only, no
decision. Fold J with the pair chosen on the slt speaker alone (festival HTS + flite, clean + 10 dB): the best hit
rate on slt's keyword streams with <= 2 FA/h on slt's keyword-free speech; then read on ked (fold J's test files).
The plain programs chosen by the same slt-only rule beside. Verifier scores from runs/kws11/verify_cache (eval_j.sh
computed every window).  Usage: python runs/kws11/explore_slt.py -> runs/kws11/explore_slt.txt"""
from pathlib import Path
from essm_stream.kws import loso as L, loso_eval as E
from essm_stream.program import StreamProgram
from essm_stream.kws.spotter import KeywordSpotter

S = Path("runs/kws8/sets_j")
F = "ho-festival.ked~festival.lp+festival.machac+festival.mv+festival.slt+flite.slt"
cfg = {"kind": "pocketsphinx", "pre_s": 1.6, "post_s": 0.1}
pairs = E.cascade_pairs()
idx = [float(i) for i in range(len(pairs))]
out = []
for name in ("D", "J"):
    prog = StreamProgram.load(f"runs/kws11/models_j{name}/{F}/kws.essm")
    sp = KeywordSpotter(prog)
    rows = {}
    for k in ("kw", "neg"):
        sets = [L.load_set(p) for p in sorted(S.glob(f"val_{F}_{k}_*_slt?.npz"))]
        rows[("val", k)] = E.pool_rows(E.cascade_set_rows(prog, sp, sets, 32, cfg, pairs, 2, "runs/kws11/verify_cache"), idx)
        for p in sorted(S.glob(f"test_{F}_{k}_*.npz")):
            s = L.load_set(p)
            rows[("test", k, s["meta"].get("snr_db"))] = E.pool_rows(
                E.cascade_set_rows(prog, sp, [s], 32, cfg, pairs, 2, "runs/kws11/verify_cache"), idx)
    plain = [i for i, p in enumerate(pairs) if p[1] is None]
    for what, allowed in (("plain (verifier none)", plain), ("cascade", list(range(len(pairs))))):
        vk = [dict(rows[("val", "kw")][i], threshold=float(i)) for i in allowed]
        vn = [dict(rows[("val", "neg")][i], threshold=float(i)) for i in allowed]
        ch = L.pick_threshold(vk, vn, 2.0, "neg")
        i = int(ch["threshold"])
        line = (f"{name} {what}: pair {pairs[i]}; slt validation {ch['hit_rate']:.1%} at {ch['neg_fa_per_hour']:.1f} FA/h"
                " | ked: " + "; ".join(
                    f"{'clean' if c is None else f'{c:g} dB'} {rows[('test', 'kw', c)][i]['hits']}/"
                    f"{rows[('test', 'kw', c)][i]['keywords']} hits, {rows[('test', 'neg', c)][i]['false_accepts']} FA "
                    f"in {rows[('test', 'neg', c)][i]['hours']:.2f} h" for c in (None, 20.0, 10.0, 5.0)))
        print(line, flush=True)
        out.append(line)
Path("runs/kws11/explore_slt.txt").write_text("\n".join(out) + "\n")
