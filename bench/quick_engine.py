"""Quick engine-only timing (no peers): median µs per step() and per run()-frame for a few points.

    python bench/quick_engine.py [edge1 edge32 paper1 ...]   (compare variants back to back)
"""
from __future__ import annotations

import sys
import time

import numpy as np

from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program

CFG = {
    "edge": dict(d_in=40, d_out=12, d_model=64, n_layers=4, seq_len=128, k_max=32, d_gate=32),
    "paper": dict(d_in=40, d_out=12, d_model=256, n_layers=8, seq_len=1024, k_max=32, d_gate=32),
}
POINTS = {"edge1": ("edge", 1, (1, 4, 32), 3000), "edge32": ("edge", 32, (1, 32), 200),
          "paper1": ("paper", 1, (1, 4, 32), 200), "paper32": ("paper", 32, (4, 32), 10)}


def main(names):
    for name in names:
        cname, B, ks, n = POINTS[name]
        prog = tiny_program(ESSMConfig(**CFG[cname]))
        eng = StreamEngine(prog, batch=B)
        rng = np.random.default_rng(0)
        L = prog.cfg.seq_len
        eng.run(rng.standard_normal((L + 1, B, prog.cfg.d_in)).astype(np.float32), 32)
        fr = rng.standard_normal((16, B, prog.cfg.d_in)).astype(np.float32)
        for K in ks:
            ts = []
            for i in range(n + 10):
                t0 = time.perf_counter_ns()
                eng.step(fr[i % 16], K)
                ts.append(time.perf_counter_ns() - t0)
            step = np.median(ts[10:]) / 1e3
            Tb = 32
            reps = max(3, n // Tb)
            tr = []
            for _ in range(reps):
                t0 = time.perf_counter_ns()
                eng.run(fr.repeat(2, axis=0), K)
                tr.append((time.perf_counter_ns() - t0) / Tb)
            print(f"{cname:5s} B={B:<2d} K={K:<2d} step p50 {step:9.1f} us   run/T p50 {np.median(tr) / 1e3:9.1f} us", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["edge1", "edge32", "paper1"])
