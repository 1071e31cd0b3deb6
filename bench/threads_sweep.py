"""The engine's threads=2 against threads=1, point by point, interleaved rounds (docs/PERFORMANCE.md "Threads").

    python bench/threads_sweep.py [--reps 5] [--paper] [--split always|rule] [--json out.json]

For each point (config, B, K) both engines step the same frames in every round, back to back; a
sample is the median of n steps; the line prints the medians over the rounds [min-max], the gain
(threads=1 time / threads=2 time, formed inside each round) and the steps' p99 / max (medians over
the rounds). --split always (default) sets ESSM_PARALLEL_MIN_WORK=0: every frame split, which is
how the crossover the engine's rule uses (numba_config.parallel_min_work) is found; --split rule
measures the engine as shipped."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--paper", action="store_true", help="also the paper config at B=1, K=4 and 32")
    ap.add_argument("--split", choices=["always", "rule"], default="always")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if a.split == "always":
        os.environ["ESSM_PARALLEL_MIN_WORK"] = "0"
    import numba

    from bench_engine import CONFIGS
    from essm_stream.config import ESSMConfig
    from essm_stream.engine import StreamEngine, tiny_program
    rng = np.random.default_rng(0)
    pts = [("edge", 1, K) for K in (1, 2, 4, 8, 12, 16, 24, 32)]
    pts += [("edge", B, K) for B in (2, 4, 8, 32) for K in (1, 4, 32)]
    if a.paper:
        pts += [("paper", 1, 4), ("paper", 1, 32)]
    progs = {n: tiny_program(ESSMConfig(**CONFIGS[n])) for n in {p[0] for p in pts}}
    engs = {}
    for name, B, K in pts:
        prog = progs[name]
        cfg = prog.cfg
        for th in (1, 2):
            e = StreamEngine(prog, batch=B, threads=th)
            e.warmup()
            e.run(rng.standard_normal((cfg.seq_len + 1, B, cfg.d_in)).astype(np.float32), K)
            fr = rng.standard_normal((16, B, cfg.d_in)).astype(np.float32)
            n = max(20, min(600, int(20000 / (B * (K + 2) * (cfg.seq_len / 128) * (cfg.d_model / 64) ** 2))))
            engs[(name, B, K, th)] = (e, fr, n)
    res = {k: [] for k in engs}
    loads = []
    for r in range(a.reps):
        loads.append(os.getloadavg()[0])
        for k, (e, fr, n) in engs.items():
            for i in range(5):
                e.step(fr[i % 16], k[2])
            ts = np.empty(n)
            pc = time.perf_counter_ns
            for i in range(n):
                t0 = pc()
                e.step(fr[i % 16], k[2])
                ts[i] = pc() - t0
            res[k].append((np.median(ts) / 1e3, np.percentile(ts, 99) / 1e3, ts.max() / 1e3))
    env = {k: os.environ.get(k) for k in ("NUMBA_CPU_NAME", "OPENBLAS_CORETYPE", "ESSM_PARALLEL_MIN_WORK")}
    print(f"threading layer {numba.threading_layer()}, split {a.split}, load average (1 min) per round "
          f"{' '.join(f'{x:.2f}' for x in loads)}, {env}")
    print("point             threads=1 µs [min-max]   threads=2 µs [min-max]   gain [min-max]      p99/max µs: t=1     t=2")
    for name, B, K in pts:
        x1, x2 = np.array(res[(name, B, K, 1)]), np.array(res[(name, B, K, 2)])
        g = x1[:, 0] / x2[:, 0]
        print(f"{name:5s} B={B:<2d} K={K:<2d}  {np.median(x1[:, 0]):8.1f} [{x1[:, 0].min():.1f}-{x1[:, 0].max():.1f}]"
              f"  {np.median(x2[:, 0]):8.1f} [{x2[:, 0].min():.1f}-{x2[:, 0].max():.1f}]"
              f"  {np.median(g):5.2f} [{g.min():.2f}-{g.max():.2f}]"
              f"   {np.median(x1[:, 1]):.0f}/{np.median(x1[:, 2]):.0f}  {np.median(x2[:, 1]):.0f}/{np.median(x2[:, 2]):.0f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"points": {str(k): v for k, v in res.items()}, "loads": loads, "env": env}, f)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
