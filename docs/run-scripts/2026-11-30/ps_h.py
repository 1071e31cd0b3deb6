"""pocketsphinx on the H fold through loso_eval's own functions (kws5). Usage:
  ps_h.py val                 # threshold sweep on the declared clean-validation subset, pick at <= 10 FA/h keyword-free
  ps_h.py test TH [TH ...]    # the thresholds on all of the H fold's test streams (clean, 10 dB), detections kept
"""
import json, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import numpy as np
from essm_stream.kws import loso as L, loso_eval as E
from essm_stream.kws.evaluate import score_stream

S, OUT = Path("runs/kws2/sets_h"), Path("runs/kws5")
FOLD = "ho-festival.ked+festival.slt"

def dets(args):
    name, pcm, th = args
    t = time.perf_counter()
    d = E.pocketsphinx_detections(pcm, th)
    return name, th, [(x.label, x.time_s) for x in d], time.perf_counter() - t

if sys.argv[1] == "val":
    val = {k: [L.load_set(p) for p in sorted(S.glob(f"val_{FOLD}_{k}_*.npz"))] for k in ("kw", "neg")}
    clean = {k: [x for x in val[k] if x["meta"].get("snr_db") is None] for k in ("kw", "neg")}
    t = time.perf_counter()
    pk = E.ps_sweep(clean["kw"], workers=2, limit_s=1200.0)
    pn = E.ps_sweep(clean["neg"], workers=2, limit_s=1200.0)
    ch = L.pick_threshold(pk, pn, 10.0, "neg")
    res = {"kw": pk, "neg": pn, "choice": ch, "limit_s": 1200.0, "seconds": time.perf_counter() - t}
    (OUT / "ps_val.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
else:
    ths = [float(x) for x in sys.argv[2:]]
    f = OUT / "ps_test.json"
    res = json.loads(f.read_text()) if f.exists() else {}
    sets = {n: L.load_set(S / f"test_{FOLD}_{n}.npz") for n in ("neg_clean", "kw_clean", "kw_10dB", "neg_10dB")}
    for th in ths:
        t = time.perf_counter()
        with ProcessPoolExecutor(2) as ex:
            outs = list(ex.map(dets, [(n, s["pcm"], th) for n, s in sets.items()]))
        for n, _, d, sec in outs:
            s = sets[n]
            from essm_stream.kws.spotter import Detection
            det = [Detection(l, 1.0, tt) for l, tt in d]
            dur = len(s["pcm"]) / 16000
            full, _ = score_stream(det, s["events"], dur)
            r = {"threshold": th, "keywords": full.keywords, "hits": full.hits, "false_accepts": full.false_accepts,
                 "hours": full.hours, "decode_s": sec, "detections": d}
            if n.startswith("neg"):
                cut = [x for x in det if x.time_s <= 600.0]
                c, _ = score_stream(cut, [e for e in s["events"] if e.end_s <= 600.0], 600.0)
                r["first600"] = {"false_accepts": c.false_accepts, "hours": c.hours}
            res.setdefault(f"{th:g}", {})[n] = r
            print(f"{th:g} {n}: {full.hits}/{full.keywords} hits, {full.false_accepts} FA in {full.hours:.2f} h "
                  f"({sec:.0f} s decode)", flush=True)
        f.write_text(json.dumps(res))
        print(f"threshold {th:g} done in {time.perf_counter() - t:.0f} s", flush=True)
