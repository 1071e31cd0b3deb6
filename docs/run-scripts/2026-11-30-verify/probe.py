"""Probe (issue 9, kws11): ES-SSM first-stage detections at a low threshold, verified by pocketsphinx.
Usage: python runs/kws11/probe.py detect SPLIT   -> runs/kws11/dets_SPLIT.json (per model, set: detections + verdicts)
       python runs/kws11/probe.py score SPLIT    -> runs/kws11/vscore_SPLIT.json (verifier scores per unique window)
"""
import json, sys, time, os
from pathlib import Path
import numpy as np
from essm_stream.kws import loso as L
from essm_stream.kws.evaluate import score_stream
from essm_stream.program import StreamProgram
from essm_stream.kws.spotter import KeywordSpotter

SETS = Path("runs/kws7/sets_h")
FOLD = "ho-festival.ked+festival.slt"
MODELS = {"D": "runs/kws7/models_D", "H": "runs/kws7/models_H"}
LOW = 0.5
OUT = Path("runs/kws11")
PRE_S, POST_S = 1.6, 0.1


def _files(split):
    if split == "jslt":      # fold J's validation sets of the slt speaker (festival HTS + flite), recorded
        return sorted(Path("runs/kws8/sets_j").glob("val_*_slt?.npz"))
    return sorted(SETS.glob(f"{split}_{FOLD}_*.npz"))


def detect(split):
    res = {}
    files = _files(split)
    for name, d in MODELS.items():
        prog = StreamProgram.load(f"{d}/{FOLD}/kws.essm")
        sp = KeywordSpotter(prog)
        for f in files:
            s = L.load_set(f)
            Y = L.engine_outputs(prog, L.normalise(prog, s["F"]), prog.k_max)
            dets = L.fast_replay(sp, Y, s["levels"], s["times"], LOW)
            sc, verd = score_stream(dets, s["events"], len(s["pcm"]) / 16000)
            ds = sorted(dets, key=lambda x: x.time_s)
            res.setdefault(name, {})[f.name] = {"hours": sc.hours, "keywords": sc.keywords,
                "dets": [[x.label, x.score, x.time_s, v] for x, v in zip(ds, verd)]}
            print(name, f.name, len(dets), sc.hits, sc.keywords, sc.false_accepts, flush=True)
    (OUT / f"dets_{split}.json").write_text(json.dumps(res))
    if len(sys.argv) > 3:
        score(split)


_DEC = {}
def _dec(word):
    from pocketsphinx import Decoder
    if word not in _DEC:
        _DEC[word] = Decoder(keyphrase=word, kws_threshold=1e-50, loglevel="FATAL")
    return _DEC[word]


def kws_score(pcm16, word):
    x = pcm16.astype(np.float64)
    x = x * (0.5 / (np.abs(x).max() + 1e-9))
    pcm = np.round(x * 32767).astype("<i2")
    dec = _dec(word)
    dec.start_utt(); dec.process_raw(pcm.tobytes(), False, True); dec.end_utt()
    segs = [s for s in (dec.seg() or []) if s.word.strip() == word]
    if not segs:
        return -1e9, None
    b = max(segs, key=lambda s: s.prob)
    return float(np.log(max(b.prob, 1e-300))), (b.start_frame, b.end_frame)


def _job(args):
    f, items = args
    s = np.load(f, allow_pickle=False)["pcm"]
    out = []
    for word, t in items:
        a, b = max(0, int((t - PRE_S) * 16000)), min(len(s), int((t + POST_S) * 16000))
        t0 = time.process_time()
        sc, fr = kws_score(s[a:b], word)
        out.append([word, t, sc, fr, time.process_time() - t0])
    return f, out


def score(split):
    dets = json.loads((OUT / f"dets_{split}.json").read_text())
    todo = {}
    for name, per in dets.items():
        for f, r in per.items():
            for lab, p, t, v in r["dets"]:
                todo.setdefault(f, set()).add((lab, round(t, 4)))
    jobs = []
    for f, items in todo.items():
        items = sorted(items, key=lambda x: x[1])
        for i in range(0, len(items), 200):
            jobs.append((str(next(p for p in _files(split) if p.name == f)), items[i:i + 200]))
    from concurrent.futures import ProcessPoolExecutor
    res = {}
    with ProcessPoolExecutor(2) as ex:
        for f, out in ex.map(_job, jobs):
            res.setdefault(Path(f).name, []).extend(out)
            print(Path(f).name, len(res[Path(f).name]), flush=True)
    (OUT / f"vscore_{split}.json").write_text(json.dumps(res))


if __name__ == "__main__":
    {"detect": detect, "score": score}[sys.argv[1]](sys.argv[2])
