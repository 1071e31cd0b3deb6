"""What a compiled step costs before it computes anything: calling a no-op numba kernel with the
general kernels' ten arguments (seven arrays) against the one-stream kernels' six (four arrays) and
three, through the dispatcher and through the compiled entry point that `StreamEngine.step` binds;
and `np.copyto` of one edge frame (40 float32 values) into the engine's input buffer, which the packed
one-stream call skips (docs/PERFORMANCE.md "A cheaper call and a streamed mixing").

    python bench/call_overhead.py [--calls 50000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from numba import njit


@njit
def _ten(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    return 0


@njit
def _six(X1, Ks, F, I, Y, nan_zero):
    return 0


@njit
def _three(X1, F, I):
    return 0


def _per_call(fn, args, calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - t) / calls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    f32, i64 = np.zeros(64, np.float32), np.zeros(64, np.int64)
    X3, Ks, Y = np.zeros((1, 1, 40), np.float32), np.ones((1, 1), np.int64), np.zeros((1, 1, 12), np.float32)
    cases = {
        "ten arguments (general kernels)": (_ten, (X3, Ks, f32, i64, i64, f32, i64, f32, Y, False)),
        "six arguments (one-stream kernels)": (_six, (X3.reshape(-1), Ks, f32, i64, Y, False)),
        "three arguments": (_three, (X3.reshape(-1), f32, i64)),
    }
    res: dict[str, list[float]] = {}
    for name, (fn, args) in cases.items():
        fn(*args)                                      # compile
        res[name + ", dispatcher"] = []
        res[name + ", entry point"] = []
    frame, buf = np.ones(40, np.float32), np.zeros(40, np.float32)
    res["np.copyto of a 40-value frame"] = []
    for _ in range(a.rounds):                          # interleaved rounds
        for name, (fn, args) in cases.items():
            res[name + ", dispatcher"].append(_per_call(fn, args, a.calls))
            entry = fn.overloads[fn.signatures[0]].entry_point
            res[name + ", entry point"].append(_per_call(entry, args, a.calls))
        res["np.copyto of a 40-value frame"].append(_per_call(np.copyto, (buf, frame), a.calls))
    print(f"µs per call, median [min-max] of {a.rounds} rounds × {a.calls} calls; "
          f"load average (1 min) {os.getloadavg()[0]:.2f}")
    for name, v in res.items():
        v = np.array(v) * 1e6
        print(f"  {name:48s} {np.median(v):.3f} [{v.min():.3f}-{v.max():.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
