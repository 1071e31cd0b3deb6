"""The B > 1 mixing and MLP on the register tile (layout dim gemm_t) against the 4 × 4 tiles they
replaced ($ESSM_GEMM_T=0), edge config, float32, one thread: step times in interleaved rounds, median
[min-max], the ratio formed inside each round, and the per-stream cost over the same round's B = 1 step.

    python bench/batch_tile.py [--batches 8,32] [--ks 4,32] [--rounds 7] [--config edge|paper] [--fp16]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from essm_stream.engine import StreamEngine, tiny_program  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import CONFIGS  # noqa: E402
from essm_stream.config import ESSMConfig  # noqa: E402


def engine(prog, B: int, tiled: bool) -> StreamEngine:
    old = os.environ.get("ESSM_GEMM_T")
    os.environ["ESSM_GEMM_T"] = "1" if tiled else "0"
    try:
        e = StreamEngine(prog, batch=B, dtype=np.float32)
    finally:
        if old is None:
            del os.environ["ESSM_GEMM_T"]
        else:
            os.environ["ESSM_GEMM_T"] = old
    assert e.layout.dims["gemm_t"] == int(tiled and B > 1), (B, tiled, e.layout.dims["gemm_t"])
    return e


def step_time(e: StreamEngine, x, K: int, n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        e.step(x, K)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="8,32", help="comma-separated B > 1")
    ap.add_argument("--ks", default="4,32", help="comma-separated budgets K")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--config", choices=("edge", "paper"), default="edge")
    ap.add_argument("--fp16", action="store_true", help="the program with --weights fp16 (mixing and MLP "
                    "weights from float16 copies)")
    a = ap.parse_args(argv)
    try:
        batches = [int(b) for b in a.batches.split(",")]
        ks = [int(k) for k in a.ks.split(",")]
    except ValueError:
        ap.error("--batches and --ks take comma-separated integers")
    if min(batches) < 2 or a.rounds < 1:
        ap.error("--batches must all be >= 2 and --rounds >= 1")
    cfg = ESSMConfig(**CONFIGS[a.config])
    if max(ks) > cfg.k_max or min(ks) < 1:
        ap.error(f"--ks must lie in 1 … {cfg.k_max}")
    prog = tiny_program(cfg)
    if a.fp16:
        prog = prog.with_mix_weights("fp16")
    rng = np.random.default_rng(0)
    engines = {(B, t): engine(prog, B, t) for B in batches for t in (True, False)}
    one = engine(prog, 1, False)
    xs = {B: rng.standard_normal((B, cfg.d_in)).astype(np.float32) for B in [1] + batches}
    for (B, _), e in engines.items():   # compile and warm every contender (and fill the rings)
        for K in ks:
            for _ in range(cfg.seq_len + 5):
                e.step(xs[B], K)
    for K in ks:
        for _ in range(cfg.seq_len + 5):
            one.step(xs[1], K)
    S: dict[tuple, list[float]] = {}
    for r in range(a.rounds):
        for K in ks:
            n1 = 400 if a.config == "edge" else 20
            S.setdefault((1, K, False), []).append(step_time(one, xs[1], K, n1))
            for B in batches:
                n = max(10, n1 // B)
                for t in (True, False):
                    S.setdefault((B, K, t), []).append(step_time(engines[(B, t)], xs[B], K, n))
        print(f"round {r + 1}/{a.rounds}, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(f"{a.config}{' fp16 weights' if a.fp16 else ''}, float32 engine, one thread, {a.rounds} interleaved rounds, load average (1 min) "
          f"{os.getloadavg()[0]:.2f} at the end; µs per step, median [min-max]")
    for K in ks:
        b1 = np.array(S[(1, K, False)])
        print(f"  B=1  K={K:<3d} {np.median(b1) * 1e6:9.1f} [{b1.min() * 1e6:.1f}-{b1.max() * 1e6:.1f}]")
        for B in batches:
            on, off = np.array(S[(B, K, True)]), np.array(S[(B, K, False)])
            sp, per_on, per_off = off / on, on / B / b1, off / B / b1
            print(f"  B={B:<3d}K={K:<3d} register tile {np.median(on) * 1e6:9.1f} [{on.min() * 1e6:.1f}-{on.max() * 1e6:.1f}]"
                  f"   4x4 tiles {np.median(off) * 1e6:9.1f} [{off.min() * 1e6:.1f}-{off.max() * 1e6:.1f}]"
                  f"   speed-up {np.median(sp):.2f}x [{sp.min():.2f}-{sp.max():.2f}]"
                  f"   per-stream / B=1: {np.median(per_on):.2f}x (was {np.median(per_off):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
