"""The batched step's convolution with and without the next block's window prefetched
(kernels.convolve_small_pf's win_min: 0 = on wherever there are several history blocks, 2^62 = off), the
mixing's Mcat prefetched a block of τ ahead (kernels.mix_tiled_pf's mix_min, the same way) and the gate's
softmax by vector code (kernels._gate_softmax_v),
edge config, float32, one thread, in one process: rounds interleaved (order alternating), median [min-max], and
each variant over `none` within a round.

    python bench/batch_conv.py [--batch 32] [--k 32] [--rounds 9] [--reps 20]

Timings a round and variant: `conv` (every layer's convolution back to back, as bench/profile_ops.py
times it), `mix` (every layer's mixing), `softmax` (the gate's) and `layers` (every layer's ring write,
gate, convolution, mixing and MLP in the step's order,
on the engine's own state: the caches as a step leaves them). µs per call, the median of `reps` calls.
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
from essm_stream.layout import IST_POS, N_LAYERS, O_EPS  # noqa: E402
from essm_stream.numba_config import l2_bytes, njit, window_prefetch_min  # noqa: E402

OFF = 1 << 62


def _make(win_min: int, mix_min: int, vec: bool):
    """The variant's three timed functions, its rules as compile-time constants (as the engine's module
    constants are: the same folding as in stream_run_fir_small)."""

    @njit(cache=False)
    def conv(Ks, W, off, lay, state, ist, work, B):
        p = ist[IST_POS]
        Kt = Ks[0, 0]
        for l in range(lay[N_LAYERS]):
            k.convolve_small_pf(Ks, 0, W, off, lay, state, work, B, l, p, Kt, win_min)

    @njit(cache=False)
    def mix(Ks, W, off, lay, state, ist, work, B):
        for l in range(lay[N_LAYERS]):
            k.mix_tiled_pf(Ks, 0, W, off, lay, work, B, l, mix_min)

    @njit(cache=False)
    def softmax(Ks, W, off, lay, state, ist, work, B):
        # (on the last call's output: the same work every call)
        for l in range(lay[N_LAYERS]):
            k._gate_softmax_v(Ks, 0, W, off, lay, work, B, l, W[k.seg(off, O_EPS, 0) + 1], vec)

    @njit(cache=False)
    def layers(Ks, W, off, lay, state, ist, work, B):
        p = ist[IST_POS]
        Kt = Ks[0, 0]
        gate_eps = W[k.seg(off, O_EPS, 0) + 1]
        for l in range(lay[N_LAYERS]):
            k.ring_write(state, work, lay, B, l, p)
            k.gate_v(Ks, 0, W, off, lay, work, B, l, Kt, gate_eps, vec)
            k.convolve_small_pf(Ks, 0, W, off, lay, state, work, B, l, p, Kt, win_min)
            k.mix_tiled_pf(Ks, 0, W, off, lay, work, B, l, mix_min)
            k.mlp_tiled(W, off, lay, work, B, l)

    return {"conv": conv, "mix": mix, "softmax": softmax, "layers": layers}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args(argv)
    from essm_stream.engine import StreamEngine
    from targets import make_program
    rng = np.random.default_rng(0)
    prog = make_program("edge")
    B = a.batch
    eng = StreamEngine(prog, batch=B, dtype=np.float32)
    assert eng._lay[k.CONV_SMALL] > 1, "the engine's mode is not the tile's (MODE_FIR_SMALL)"
    eng.run(rng.standard_normal((prog.cfg.seq_len + 1, B, prog.cfg.d_in)).astype(np.float32), prog.cfg.k_max)
    Ks = np.full((1, B), a.k, np.int64)
    args = (Ks, eng._W, eng._off, eng._lay, eng._state, eng._ist, eng._work, B)
    # (prefetch: both prefetches and the vector softmax, as the engine now; none: as before this session;
    # the other two: one prefetch each, the softmax as before)
    variants = {"prefetch": _make(0, 0, True), "none": _make(OFF, OFF, False), "conv only": _make(0, OFF, False),
                "mix only": _make(OFF, 0, False)}
    fns = list(variants["none"])
    for v in variants.values():
        for f in v.values():
            f(*args)
    got = {(f, v): [] for f in fns for v in variants}
    for r in range(a.rounds):
        for fname in fns:
            for vname in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                ts = []
                for _ in range(a.reps):
                    t0 = time.perf_counter()
                    variants[vname][fname](*args)
                    ts.append(time.perf_counter() - t0)
                got[(fname, vname)].append(np.median(ts) * 1e6)
    print(f"edge B={B} K={a.k} float32, L2 {l2_bytes() >> 10} KB (rule: windows >= {window_prefetch_min() >> 10} KB), "
          f"{a.rounds} rounds x median of {a.reps}, load average (1 min) {os.getloadavg()[0]:.2f} at the end")
    for fname in fns:
        base = np.array(got[(fname, "none")])
        cells = []
        for vname in variants:
            x = np.array(got[(fname, vname)])
            cell = f"{vname} {np.median(x):.1f} [{x.min():.1f}-{x.max():.1f}]"
            if vname != "none":
                q = x / base
                cell += f" (/none {np.median(q):.3f} [{q.min():.3f}-{q.max():.3f}])"
            cells.append(cell)
        print(f"  {fname:6s} µs: " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
