"""Where a step's time goes: each op of `kernels._run` timed alone, in place, on a real engine's arrays.

    python bench/profile_ops.py [--points 1:32,1:4,32:32] [--fp16]     (B:K pairs, edge config)

Every op runs `reps` times back to back on the state and scratch of an engine that has already
stepped past its window (so the history is full); the best of 5 such timings, per call of the op
over all layers, less the time of restoring the residual stream h before each repetition (ops that
add into h would otherwise grow it to Inf/NaN over the repetitions, and time that arithmetic). Ops overlap and share caches inside a real step, so the parts need not add up to
the step (printed beside them, the median of `step()` calls of the same engine).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from essm_stream import kernels as k  # noqa: E402
from essm_stream.layout import (CONV_SMALL, D_MODEL, IST_POS, MIX16, MLP16, N_LAYERS, O_EPS, O_LN1B, O_LN1G, W_H, W_U,  # noqa: E402
                                WL)
from essm_stream.numba_config import njit  # noqa: E402

NAMES = ("input projection", "LayerNorm 1", "finite check", "ring write", "gate", "convolution", "mixing",
         "MLP", "head")


@njit(cache=False)
def _op(X, Ks, W, off, lay, state, ist, work, Y, which, reps):
    B = X.shape[1]
    p = ist[IST_POS]
    ln_eps, gate_eps = W[k.seg(off, O_EPS, 0)], W[k.seg(off, O_EPS, 0) + 1]
    d, wl = lay[D_MODEL], lay[WL]
    Kt = Ks[0, 0]
    acc = 0
    h0 = work.copy()   # the residual stream before the op: restored before every repetition, so that
    sh = lay[W_H]      # ops that add into h (mixing, MLP) see the values of a real step, not values grown
    for r in range(reps):   # by repetition to Inf/NaN (whose arithmetic is slower: the MLP read 2x too slow)
        for b in range(B):
            for j in range(d):
                work[b * wl + sh + j] = h0[b * wl + sh + j]
        for l in range(lay[N_LAYERS] if 0 < which < 8 else 1):
            if which < 0:
                break
            if which == 0:
                k.input_projection(X, 0, W, off, lay, work, ist)
            elif which == 1:
                k._layer_norm_streams(work, B, wl, lay[W_H], lay[W_U], W, k.seg(off, O_LN1G, l),
                                      k.seg(off, O_LN1B, l), d, ln_eps)
            elif which == 2:
                acc += k.rows_finite(work, lay[W_U], wl, B, d)
            elif which == 3:
                k.ring_write(state, work, lay, B, l, p)
            elif which == 4:
                k.gate(Ks, 0, W, off, lay, work, B, l, Kt, gate_eps)
            elif which == 5:
                if lay[CONV_SMALL] > 1:   # the engine's mode: kernels.kernel_for
                    k.convolve_small(Ks, 0, W, off, lay, state, work, B, l, p, Kt)
                else:
                    k.convolve(Ks, 0, W, off, lay, state, work, B, l, p, Kt)
            elif which == 6:   # (the tile modes' versions: B > 1 on the register tile where lay[GEMM_T])
                if lay[MIX16] != 0:   # a --weights fp16 program (--fp16): Mcat's float16 copy
                    if lay[CONV_SMALL] > 1:
                        k.mix_h_tiled(Ks, 0, W, off, lay, work, B, l)
                    else:
                        k.mix_h(Ks, 0, W, off, lay, work, B, l)
                elif lay[CONV_SMALL] > 1:
                    k.mix_tiled(Ks, 0, W, off, lay, work, B, l)
                else:
                    k.mix(Ks, 0, W, off, lay, work, B, l)
            elif which == 7:
                if lay[MLP16] != 0:   # (--fp16: fc1.W / fc2.W from their float16 copies, as the engine's mode)
                    if lay[CONV_SMALL] > 1:
                        k.mlp_h_tiled(W, off, lay, work, B, l)
                    else:
                        k.mlp_h(W, off, lay, work, B, l)
                elif lay[CONV_SMALL] > 1:
                    k.mlp_tiled(W, off, lay, work, B, l)
                else:
                    k.mlp(W, off, lay, work, B, l, ln_eps)
            else:
                k.head(0, W, off, lay, state, ist, work, Y, B, ln_eps)
    return acc


def profile(B: int, K: int, config: str = "edge", fp16: bool = False) -> dict:
    from essm_stream.engine import StreamEngine
    from targets import make_program
    rng = np.random.default_rng(0)
    prog = make_program(config)
    if fp16:
        prog = prog.with_mix_weights("fp16")
    eng = StreamEngine(prog, batch=B)
    eng.run(rng.standard_normal((prog.cfg.seq_len + 1, B, prog.cfg.d_in)).astype(np.float32), prog.cfg.k_max)
    X = rng.standard_normal((1, B, prog.cfg.d_in)).astype(np.float32)
    Ks = np.full((1, B), K, np.int64)
    args = (X, Ks, eng._W, eng._off, eng._lay, eng._state, eng._ist, eng._work, eng._y1)
    reps = max(10, 2000 // B)
    out = {}
    _op(*args, -1, 1)   # which = -1: no op, only the restore of h (subtracted from every op's time)
    base = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        _op(*args, -1, reps)
        base = min(base, (time.perf_counter() - t0) / reps)
    for w, name in enumerate(NAMES):
        _op(*args, w, 1)
        best = np.inf
        for _ in range(5):
            t0 = time.perf_counter()
            _op(*args, w, reps)
            best = min(best, (time.perf_counter() - t0) / reps)
        out[name] = best - base
    x = X[0] if B > 1 else X[0, 0]
    for _ in range(20):
        eng.step(x, K)
    ts = []
    for _ in range(max(50, 2000 // B)):
        t0 = time.perf_counter_ns()
        eng.step(x, K)
        ts.append(time.perf_counter_ns() - t0)
    out["step"] = float(np.median(ts)) / 1e9
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="1:32,1:4,32:32", help="comma-separated B:K pairs")
    ap.add_argument("--config", default="edge", choices=["edge", "paper", "tiny"])
    ap.add_argument("--fp16", action="store_true", help="the program with --weights fp16 (float16 mixing and MLP weights)")
    a = ap.parse_args()
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}; µs per step (all layers), best of 5")
    for pt in a.points.split(","):
        B, K = (int(v) for v in pt.split(":"))
        r = profile(B, K, a.config, a.fp16)
        parts = ", ".join(f"{n} {r[n] * 1e6:.1f}" for n in NAMES)
        print(f"{a.config}{' fp16' if a.fp16 else ''} B={B} K={K}: step {r['step'] * 1e6:.1f} (median) | {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
