"""The convolution's product alone: the register tile (simd.conv_product) against BLAS (numba's np.dot)
and the old four-row numba loop (kernels._small_product, where it still exists), edge shapes.

    python bench/conv_tile.py [--L 128] [--w 64] [--ks 1,2,4,8,16,32] [--reps 20000]

C (K × w) = F (K × L) · X (L × w), float32, each path `reps` times in one compiled loop (no call
overhead from Python); best of 5, ns per product and GFLOP/s (2 K L w flops). The tile's shape is the
one numba_config.conv_tile chose for numba's target (NUMBA_CPU_NAME / ESSM_CONV_TILE change it)."""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from essm_stream import kernels, simd  # noqa: E402
from essm_stream.numba_config import njit  # noqa: E402


@njit(cache=False)
def _tile(F, X, C, S, K, L, w, reps):
    for _ in range(reps):
        simd.conv_product(F, 0, L, X, 0, w, C, 0, w, S, -1, K)


@njit(cache=False)
def _blas(F, X, C, S, K, L, w, reps):
    for _ in range(reps):
        np.dot(F[:K * L].reshape((K, L)), X[:L * w].reshape((L, w)), C[:K * w].reshape((K, w)))


if hasattr(kernels, "_small_product"):
    @njit(cache=False)
    def _loop(F, X, C, S, K, L, w, reps):
        for _ in range(reps):
            kernels._small_product(F, 0, L, X, 0, w, C, 0, K)
else:
    _loop = None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, default=128)
    ap.add_argument("--w", type=int, default=64)
    ap.add_argument("--ks", default="1,2,4,8,16,32")
    ap.add_argument("--reps", type=int, default=20000)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    ks = [int(k) for k in a.ks.split(",")]
    F = rng.standard_normal(max(ks) * a.L).astype(np.float32)
    X = rng.standard_normal(a.L * a.w).astype(np.float32)
    C = np.zeros(max(ks) * a.w, np.float32)
    S = np.ones(max(ks), np.float32)
    print(f"tile {simd.TILE_ROWS} rows x {simd.TILE_VECS} x {simd.TILE_LANES} lanes; L={a.L} w={a.w}; "
          f"NUMBA_CPU_NAME={os.environ.get('NUMBA_CPU_NAME', '')} load {os.getloadavg()[0]:.2f}")
    paths = [("tile", _tile), ("blas", _blas)] + ([("loop", _loop)] if _loop else [])
    for K in ks:
        row = [f"K={K:3d}"]
        for name, fn in paths:
            if name == "loop" and K < 2:
                continue
            reps = max(200, a.reps // K)
            fn(F, X, C, S, K, a.L, a.w, 1)
            best = np.inf
            for _ in range(5):
                t0 = time.perf_counter()
                fn(F, X, C, S, K, a.L, a.w, reps)
                best = min(best, (time.perf_counter() - t0) / reps)
            row.append(f"{name} {best * 1e9:7.0f} ns {2 * K * a.L * a.w / best / 1e9:6.1f} GF/s")
        print("  ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
