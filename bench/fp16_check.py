"""What weights rounded to float16 (`essm-stream compile --weights fp16`: Mcat, and since 14:00 UTC on
2026-11-30 the MLP's fc1.W / fc2.W) change in the outputs.

    python bench/fp16_check.py [--ks 1,4,8,16,32]

1. Engine outputs: the bundled keyword model and the bench's edge program (random weights), fp16 program
   against fp32 program, T frames of random input at each K: the float64 reference of both (only the
   weights differ) and the float32 kernels (what runs), max |Δy| / max |y_fp32|.
2. The bundled keyword spotter on the bundled 40 s recording at fixed K: detections (label, time) of
   the fp16 program against the fp32 program's, and the largest difference of the smoothed posteriors.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ks", default="1,4,8,16,32")
    ap.add_argument("--frames", type=int, default=300)
    a = ap.parse_args(argv)
    from essm_stream.engine import StreamEngine
    from essm_stream.kws.recording import load_recording
    from essm_stream.kws.spotter import KeywordSpotter, load_program
    from targets import make_program

    kws = load_program()
    progs = {"bundled KWS model": kws, "edge (random weights)": make_program("edge")}
    rng = np.random.default_rng(0)
    print("1. engine outputs, fp16 program vs fp32 program: max |dy| / max |y|  (float64 reference | float32 kernels)")
    for name, p32 in progs.items():
        p16 = p32.with_mix_weights("fp16")
        X = rng.standard_normal((a.frames, 1, p32.cfg.d_in))
        row = []
        for K in [int(k) for k in a.ks.split(",") if int(k) <= p32.k_max]:
            r32 = StreamEngine(p32, dtype=np.float64, kernel="ref").run(X, K)
            r16 = StreamEngine(p16, dtype=np.float64, kernel="ref").run(X, K)
            e16 = StreamEngine(p16)
            y32 = StreamEngine(p32).run(X.astype(np.float32), K)
            y16 = e16.run(X.astype(np.float32), K)
            row.append(f"K={K}: {rel(r16, r32):.1e} | {rel(y16.astype(np.float64), y32.astype(np.float64)):.1e}"
                       f" (fp16 kernel: {'half copies' if e16.layout.dims['mix16'] else 'float32 Mcat'}"
                       f"{' of Mcat and the MLP' if e16.layout.dims['mlp16'] else ''})")
        print(f"  {name} (rounded: {', '.join(p16.fp16_arrays)}): " + "; ".join(row))
    pcm, events = load_recording()
    print(f"2. keyword spotter, bundled recording ({len(pcm) / 16000:.0f} s, "
          f"{sum(e.label != 'speech' for e in events)} keywords), fixed K:")
    for K in [int(k) for k in a.ks.split(",") if int(k) <= kws.k_max]:
        out = {}
        for tag, prog in (("fp32", kws), ("fp16", kws.with_mix_weights("fp16"))):
            sp = KeywordSpotter(prog, K=K, record=True)
            dets = []
            for i in range(0, len(pcm), 1600):
                dets += sp.process(pcm[i:i + 1600])
            out[tag] = ([(d.label, round(d.time_s, 2)) for d in dets], np.asarray(sp.trace.arrays()["posterior"]))
        same = out["fp16"][0] == out["fp32"][0]
        dp = float(np.max(np.abs(out["fp16"][1] - out["fp32"][1])))
        diff = "" if same else (f"; only fp32: {sorted(set(out['fp32'][0]) - set(out['fp16'][0]))}, "
                                f"only fp16: {sorted(set(out['fp16'][0]) - set(out['fp32'][0]))}")
        print(f"  K={K:2d}: {len(out['fp32'][0])} detections fp32, {len(out['fp16'][0])} fp16, "
              f"{'identical' if same else 'DIFFERENT'}; max |posterior difference| {dp:.1e}{diff}")


if __name__ == "__main__":
    main()
