"""The B = 1 GEMVs of an edge step alone: gemm_nt's dot-product tiles against gemv.gemv_t (outputs in
registers, weights input-major), float32 and float16-bit weights.

    python bench/probe_gemv.py [--rounds 5] [--steps 2000]

Sets (four layers of the edge config, d = 64, d_hidden = 128, K̄ = 32, each layer's weights at its
own offset as in the engine's W): "mix K=4" / "mix K=32" (y += Mcat[:, :(K+1) d] · V), "MLP"
(fc1 then fc2). µs per step (all four layers), the best of `rounds` interleaved timings of `steps`
steps each; the weights of the four layers are what one step reads (L2 at K=4, L3 at K=32).
No engine around them: the parts of a real step are `bench/profile_ops.py`'s.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from essm_stream import gemv, kernels as k  # noqa: E402
from essm_stream.numba_config import njit  # noqa: E402

D, DH, KB, NL = 64, 128, 32, 4
LDM = (KB + 1) * D


@njit(cache=False)
def _mix_tiles(x, M, out, n_in, steps):
    for _ in range(steps):
        for l in range(NL):
            k.gemm_nt(x, 0, 0, M, l * D * LDM, LDM, n_in, out, 0, 0, 1, D, True)


@njit(cache=False)
def _mix_tiles_h(x, H, out, n_in, steps):
    for _ in range(steps):
        for l in range(NL):
            k.gemm_nt_h(x, 0, 0, H, l * D * LDM, LDM, n_in, out, 0, 0, 1, D)


@njit(cache=False)
def _mix_gemv(x, Mt, out, n_in, steps):
    for _ in range(steps):
        for l in range(NL):
            gemv.gemv_t(x, 0, Mt, l * D * LDM, D, n_in, D, out, 0)


@njit(cache=False)
def _mlp_tiles(z, F, a, out, steps):
    for _ in range(steps):
        for l in range(NL):
            k.gemm_nt(z, 0, 0, F, l * 2 * D * DH, D, D, a, 0, 0, 1, DH, False)
            k.gemm_nt(a, 0, 0, F, l * 2 * D * DH + D * DH, DH, DH, out, 0, 0, 1, D, True)


@njit(cache=False)
def _mlp_tiles_h(z, H, a, out, steps):
    for _ in range(steps):
        for l in range(NL):
            a[:] = 0.0
            k.gemm_nt_h(z, 0, 0, H, l * 2 * D * DH, D, D, a, 0, 0, 1, DH)
            k.gemm_nt_h(a, 0, 0, H, l * 2 * D * DH + D * DH, DH, DH, out, 0, 0, 1, D)


@njit(cache=False)
def _mlp_gemv(z, Ft, a, out, steps):
    for _ in range(steps):
        for l in range(NL):
            a[:] = 0.0
            gemv.gemv_t(z, 0, Ft, l * 2 * D * DH, DH, D, DH, a, 0)
            gemv.gemv_t(a, 0, Ft, l * 2 * D * DH + D * DH, D, DH, D, out, 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2000)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    M = (rng.standard_normal((NL, D, LDM)) * 0.05).astype(np.float32)          # row-major, as Mcat
    Mt = np.ascontiguousarray(M.transpose(0, 2, 1)).ravel()                    # input-major (gemv1)
    F1 = (rng.standard_normal((NL, DH, D)) * 0.1).astype(np.float32)
    F2 = (rng.standard_normal((NL, D, DH)) * 0.1).astype(np.float32)
    F = np.concatenate([np.concatenate([F1[l].ravel(), F2[l].ravel()]) for l in range(NL)])
    Ft = np.concatenate([np.concatenate([F1[l].T.ravel(), F2[l].T.ravel()]) for l in range(NL)])
    h = lambda v: v.astype(np.float16).view(np.uint16)   # noqa: E731
    x = rng.standard_normal(LDM).astype(np.float32)
    out, av = np.zeros(D, np.float32), np.zeros(DH, np.float32)
    cases = []
    for K in (4, 32):
        n = (K + 1) * D
        cases += [(f"mix K={K}", "fp32 tiles", _mix_tiles, (x, M.ravel(), out, n)),
                  (f"mix K={K}", "fp16 tiles", _mix_tiles_h, (x, h(M.ravel()), out, n)),
                  (f"mix K={K}", "fp32 gemv_t", _mix_gemv, (x, Mt, out, n)),
                  (f"mix K={K}", "fp16 gemv_t", _mix_gemv, (x, h(Mt), out, n))]
    cases += [("MLP", "fp32 tiles", _mlp_tiles, (x, F, av, out)),
              ("MLP", "fp16 tiles", _mlp_tiles_h, (x, h(F), av, out)),
              ("MLP", "fp32 gemv_t", _mlp_gemv, (x, Ft, av, out)),
              ("MLP", "fp16 gemv_t", _mlp_gemv, (x, h(Ft), av, out))]
    for _, _, f, args in cases:
        f(*args, 2)
    best = {i: np.inf for i in range(len(cases))}
    for _ in range(a.rounds):
        for i, (_, _, f, args) in enumerate(cases):
            out[:] = 0.0
            t0 = time.perf_counter()
            f(*args, a.steps)
            best[i] = min(best[i], (time.perf_counter() - t0) / a.steps)
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}; gemv: VW={gemv.VW}, chunk={gemv.CHUNK}; "
          f"µs per step (4 layers), best of {a.rounds}")
    for i, (s, kind, _, _) in enumerate(cases):
        print(f"{s:9s} {kind:12s} {best[i] * 1e6:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
