"""The float32 step (B=1, or --batch B streams stepped together) of source trees (the edge config, or the
paper config), each run in fresh
processes, trees interleaved and their order reversed every other round (the second tree of a round
can read slower): what a change costs or gains when it shows only across processes (W's base
address, for one, differs from one process to the next: the output names it, mod 64).

    python bench/tree_step.py --trees /tmp/before . [--processes 4] [--ks 32,4] [--fp16] [--config paper] [--batch 32]

With --batch B the time is that of one step of all B streams (every stream at budget K).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import CONFIGS  # noqa: E402

STEPS = {"edge": 400, "paper": 40}   # steps per timing (5 timings a budget, after 3/4 as many to warm up)

_CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
cfg = ESSMConfig(**json.loads(sys.argv[4]))
prog = tiny_program(cfg)
n = int(sys.argv[5])
if sys.argv[3] == "fp16":
    prog = prog.with_mix_weights("fp16")
B = int(sys.argv[6])
e = StreamEngine(prog, batch=B, dtype=np.float32) if B > 1 else StreamEngine(prog)
x = np.random.default_rng(0).standard_normal(40 if B == 1 else (B, 40)).astype(np.float32)
res = {"w_mod64": int(e._W.ctypes.data % 64)}
for K in map(int, sys.argv[2].split(",")):
    for _ in range(3 * n // 4):
        e.step(x, K)
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            e.step(x, K)
        ts.append((time.perf_counter() - t0) / n)
    res[str(K)] = float(np.median(ts))
print(json.dumps(res))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trees", nargs="+", required=True, help="source trees (each with essm_stream/)")
    ap.add_argument("--processes", type=int, default=4, help="fresh processes per tree")
    ap.add_argument("--ks", default="32,4", help="comma-separated budgets")
    ap.add_argument("--fp16", action="store_true", help="the program with --weights fp16")
    ap.add_argument("--batch", type=int, default=1, help="streams stepped together (default 1)")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="edge", help="the bench's config (bench_engine.CONFIGS)")
    a = ap.parse_args(argv)
    if a.processes < 1:
        ap.error("--processes must be >= 1")
    for t in a.trees:
        if not os.path.isdir(os.path.join(t, "essm_stream")):
            ap.error(f"{t}: no essm_stream/ in it")
    ks = a.ks.split(",")
    got = {t: [] for t in a.trees}
    cfg = json.dumps(CONFIGS[a.config])
    n = max(50, STEPS[a.config] // a.batch) if a.batch > 1 else STEPS[a.config]
    for i in range(a.processes):
        for t in (a.trees if i % 2 == 0 else a.trees[::-1]):
            r = subprocess.run([sys.executable, "-c", _CHILD, os.path.abspath(t), a.ks, "fp16" if a.fp16 else "fp32",
                                cfg, str(n), str(a.batch)], capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                print(r.stderr[-2000:], file=sys.stderr)
                return 1
            res = json.loads(r.stdout.strip().splitlines()[-1])
            got[t].append(res)
            print(f"process {i + 1}, {t}: W mod 64 = {res['w_mod64']}, " +
                  ", ".join(f"K={k} {res[k] * 1e6:.1f} µs" for k in ks), file=sys.stderr)
    print(f"{a.config} B={a.batch} float32 engine{', fp16 weights' if a.fp16 else ''}, median of 5 × {n} steps per process, {a.processes} processes per tree, "
          f"load average (1 min) {os.getloadavg()[0]:.2f} at the end")
    for t, rs in got.items():
        cols = []
        for k in ks:
            v = np.array([r[k] for r in rs]) * 1e6
            cols.append(f"K={k} {np.median(v):.1f} [{v.min():.1f}-{v.max():.1f}] µs")
        print(f"  {t}: " + ", ".join(cols) + f"; W mod 64: {[r['w_mod64'] for r in rs]}")
    if len(a.trees) == 2:   # (the two processes of a round ran back to back: their ratio, round by round)
        t0, t1 = a.trees
        cols = []
        for k in ks:
            q = np.array([r1[k] / r0[k] for r0, r1 in zip(got[t0], got[t1])])
            cols.append(f"K={k} {np.median(q):.3f} [{q.min():.3f}-{q.max():.3f}], {int(np.sum(q < 1))}/{q.size} rounds < 1")
        print(f"  second / first tree, per round: " + ", ".join(cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
