"""The edge step's convolution and mixing alone, and how much of the one the other's prefetch hides; and the
B = 1 GEMV's rate by the cache level its weights come from.

    python bench/mix_overlap.py [--k 32] [--gemv]

Part 1 (the convolution and mixing of 4 layers, d = 64, L = 128, budget K, each layer's own weights: Mcat's
active (K + 1) d rows, 2.16 MB at K = 32, read from L3 every pass): µs per pass of 4 layers, median [min–max]
of 7 timings of 2000 passes, for
  * conv_pf + stream: what stream_run_fir_one does at K >= 19 (simd.conv_product_pf prefetching the layer's
    Mcat, then gemv.gemv_stream),
  * conv_pf + gemv_t: the same with the mixing through L2 (gemv_t),
  * conv_pf only / conv (no prefetch) + stream,
  * stream mix only / gemv_t mix only (from L3), gemv_t mix of one layer 4 times (from L2).
Part 2 (--gemv): gemv_t over n rows of 64 outputs, repeated over m matrices (16 KB … 2 MB: L1, L2, L3).
Everything compiles for numba's target (the AVX2 emulation's variables change it: docs/PERFORMANCE.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from essm_stream import gemv, simd  # noqa: E402
from essm_stream.layout import aligned_zeros  # noqa: E402
from essm_stream.numba_config import njit  # noqa: E402

L, D, NL = 128, 64, 4
MODES = ("conv_pf + stream", "conv_pf + gemv_t", "conv_pf only", "conv + stream", "stream mix only",
         "gemv_t mix only", "gemv_t mix, one layer (L2)")


@njit(cache=False)
def _parts(W, X, work, reps, K, mode):
    msz = (K + 1) * D * D
    per = msz + L * K
    for _ in range(reps):
        for l in range(NL):
            m0 = l * per if mode != 6 else 0
            f0 = l * per + msz
            p0, prow = m0 * 4, msz * 4
            pn = 1 if mode != 3 else 0
            if mode <= 3:
                simd.conv_product_pf(W, f0, L, X, l * 2 * L * D, D, work, 2 * D, D, work, 2048, K, p0, prow, pn, 0)
            if mode == 0 or mode == 3 or mode == 4:
                gemv.gemv_stream(work, D, W, m0, D, (K + 1) * D, work, 0, gemv.STREAM_AHEAD)
            elif mode == 1 or mode == 5 or mode == 6:
                gemv.gemv_t(work, D, W, m0, D, (K + 1) * D, D, work, 0)


@njit(cache=False)
def _gemvs(W, work, reps, rows, nmat):
    for _ in range(reps):
        for m in range(nmat):
            gemv.gemv_t(work, 0, W, m * rows * D, D, rows, D, work, 4096)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=32, help="the budget (Mcat's active rows: (K + 1) d)")
    ap.add_argument("--gemv", action="store_true", help="also part 2: the GEMV's rate by cache level")
    a = ap.parse_args(argv)
    if not 1 <= a.k <= 64:
        ap.error("--k must be in 1 … 64")
    rng = np.random.default_rng(0)
    K = a.k
    W = aligned_zeros(NL * ((K + 1) * D * D + L * K) + 64, np.float32)
    W[:] = rng.standard_normal(W.size).astype(np.float32) * 0.01
    X = aligned_zeros(NL * 2 * L * D, np.float32)
    X[:] = rng.standard_normal(X.size).astype(np.float32)
    work = aligned_zeros(8192, np.float32)
    work[:] = 0.1
    print(f"edge convolution and mixing, K={K}, 4 layers ({NL * (K + 1) * D * D * 4 / 1e6:.2f} MB of Mcat), "
          f"simd tile {simd.TILE_ROWS}x{simd.TILE_VECS}x{simd.TILE_LANES}, prefetch {simd.PF_LINES} lines, "
          f"load average {os.getloadavg()[0]:.2f}")
    for m, name in enumerate(MODES):
        _parts(W, X, work, 3, K, m)
    res = {m: [] for m in range(len(MODES))}
    for _ in range(7):                      # modes interleaved, 7 rounds
        for m in range(len(MODES)):
            t0 = time.perf_counter()
            _parts(W, X, work, 2000, K, m)
            res[m].append((time.perf_counter() - t0) / 2000 * 1e6)
    for m, name in enumerate(MODES):
        v = np.array(res[m])
        print(f"  {name:28s} {np.median(v):6.2f} [{v.min():.2f}-{v.max():.2f}] µs")
    if a.gemv:
        Wg = aligned_zeros(1 << 20, np.float32)
        Wg[:] = 0.01
        print("gemv_t, 64 outputs, rows × matrices (weights' bytes): ns, GB/s, ns a row")
        for rows, nmat in ((64, 1), (128, 1), (320, 1), (320, 4), (320, 12), (2112, 4)):
            _gemvs(Wg, work, 3, rows, nmat)
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                _gemvs(Wg, work, 20000, rows, nmat)
                ts.append((time.perf_counter() - t0) / 20000)
            t = float(np.median(ts))
            nb = rows * nmat * D * 4
            print(f"  {rows:5d} × {nmat:2d} ({nb // 1024:5d} KB): {t * 1e9:7.0f} ns, {nb / t / 1e9:5.0f} GB/s, "
                  f"{t * 1e9 / (rows * nmat):.2f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
