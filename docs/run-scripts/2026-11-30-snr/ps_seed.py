"""kws7: seed kws-eval's pocketsphinx cache (OUT/ps_cache) with kws5's detections on the H fold's clean / 10 dB
test sets (runs/kws5/ps_test.json: pocketsphinx_detections on each whole set, the same function kws-eval calls),
so the one kws-eval run decodes only the new 20 / 5 dB sets. Usage: ps_seed.py OUT"""
import json
import sys
from pathlib import Path

from essm_stream.kws import loso as L
from essm_stream.kws import loso_eval as E

out = Path(sys.argv[1])
ps = json.loads(Path("runs/kws5/ps_test.json").read_text())
FOLD = "ho-festival.ked+festival.slt"
for name in ("kw_clean", "neg_clean", "kw_10dB", "neg_10dB"):
    s = L.load_set(f"runs/kws7/sets_h/test_{FOLD}_{name}.npz")
    for th, r in ps.items():
        if name in r:
            d = r[name]
            assert abs(len(s["pcm"]) / 16000 / 3600 - d["hours"]) < 1e-6, (name, d["hours"])
            E.ps_cache_put(out / "ps_cache", s, float(th), None, [tuple(x) for x in d["detections"]], d["decode_s"])
            print(f"{name} {th}: {len(d['detections'])} detections cached")
