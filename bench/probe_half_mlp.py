"""Probe: the B=1 MLP (and gate) GEMVs of an edge step with float16 weights, against float32.

    python bench/probe_half_mlp.py [--steps 2000] [--rounds 5] [--contexts 4:0.25,32:1.25]

The edge config's MLP at B=1 is two GEMVs per layer, a = fc1.W z (128 × 64) and h += fc2.W a
(64 × 128), and the gate's first GEMV g = W1 u (32 × 64): 4 × (32 + 32 + 8) KB = 288 KB of float32
weights per step, read from L2 (or L3, where the mixing's Mcat stream evicted them). This times those
GEMVs for four layers, one "step" after another, with the engine's own kernels:
  fp32  `kernels.gemm_nt` (its 1 × 8 tiles), what the engine runs now;
  fp16  `kernels.gemm_nt_h` (the same tiles widening IEEE half bits, the fp16 program's mixing kernel).
A context `K:MB` adds, per step, a read of a buffer of MB megabytes standing in for the rest of a
real step's working set at that K (fp16 Mcat[:, :(K+1)d] of four layers, the filters, history and
gate: ≈ 0.25 MB at K=4, ≈ 1.25 MB at K=32), so that the weights compete for L2 as inside a step; its
time alone is printed and subtracted. Rounds interleave the kernels; each sample is the median µs
per step of `steps` steps. AVX2 emulation: NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= (see
docs/PERFORMANCE.md).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from essm_stream import kernels as k  # noqa: E402
from essm_stream.numba_config import njit  # noqa: E402
from probe_half_mix import _now, tsc_hz  # noqa: E402  (rdtsc timer of the mixing probe)

# (rows, cols) of the GEMVs per layer: fc1.W, fc2.W, gate W1
SHAPES = {"mlp": ((128, 64), (64, 128)), "gate": ((32, 64),), "mlp+gate": ((128, 64), (64, 128), (32, 64)),
          # the mixing's GEMV at K=4 / K=32 (64 outputs, (K+1) d inputs; the tiles read the rows
          # contiguous here, the engine's at Mcat's row stride (K̄+1) d; the axpy form would read the
          # active prefix of a transposed Mcat, contiguous in the engine too): --sets mix4,mix32
          "mix4": ((64, 320),), "mix32": ((64, 2112),)}


@njit(cache=False)
def _steps32(x, Wt, offs, rows, cols, out, other, reps, times):
    acc = np.float32(0)
    for r in range(reps):
        t0 = _now()
        for g in range(offs.size):
            k.gemm_nt(x, 0, 0, Wt, offs[g], cols[g], cols[g], out, 0, 1, 1, rows[g], True)
        for i in range(other.size):
            acc += other[i]
        times[r] = _now() - t0
    return acc


@njit(cache=False)
def _steps16(x, H, offs, rows, cols, out, other, reps, times):
    acc = np.float32(0)
    for r in range(reps):
        t0 = _now()
        for g in range(offs.size):
            k.gemm_nt_h(x, 0, 0, H, offs[g], cols[g], cols[g], out, 0, 1, 1, rows[g])
        for i in range(other.size):
            acc += other[i]
        times[r] = _now() - t0
    return acc


def _make_axpy(widen):
    @njit(cache=False)
    def axpy4(x, WT, w0, n_in, n_out, out):
        """out[:n_out] += Σ_m x[m] WT[w0 + m n_out: ... + n_out] (weights stored transposed, (n_in, n_out)):
        four rows of WT per pass over the output (each loaded and stored output vector carries four
        multiply-adds), no horizontal sums."""
        y = out[:n_out]
        m = 0
        while m + 4 <= n_in:
            a, b, c, e = x[m], x[m + 1], x[m + 2], x[m + 3]
            r0 = WT[w0 + m * n_out:w0 + (m + 1) * n_out]
            r1 = WT[w0 + (m + 1) * n_out:w0 + (m + 2) * n_out]
            r2 = WT[w0 + (m + 2) * n_out:w0 + (m + 3) * n_out]
            r3 = WT[w0 + (m + 3) * n_out:w0 + (m + 4) * n_out]
            for j in range(n_out):
                y[j] += a * widen(r0[j]) + b * widen(r1[j]) + c * widen(r2[j]) + e * widen(r3[j])
            m += 4
        while m < n_in:
            a = x[m]
            r0 = WT[w0 + m * n_out:w0 + (m + 1) * n_out]
            for j in range(n_out):
                y[j] += a * widen(r0[j])
            m += 1
    return axpy4


@njit(cache=False, inline="always")
def _id(v):
    return v


def _make_axpy8(widen):
    @njit(cache=False)
    def axpy8(x, WT, w0, n_in, n_out, out):
        """axpy4 with eight rows of WT per pass (n_in a multiple of 8 here)."""
        y = out[:n_out]
        for m in range(0, n_in, 8):
            a0, a1, a2, a3 = x[m], x[m + 1], x[m + 2], x[m + 3]
            a4, a5, a6, a7 = x[m + 4], x[m + 5], x[m + 6], x[m + 7]
            o = w0 + m * n_out
            r0 = WT[o:o + n_out]
            r1 = WT[o + n_out:o + 2 * n_out]
            r2 = WT[o + 2 * n_out:o + 3 * n_out]
            r3 = WT[o + 3 * n_out:o + 4 * n_out]
            r4 = WT[o + 4 * n_out:o + 5 * n_out]
            r5 = WT[o + 5 * n_out:o + 6 * n_out]
            r6 = WT[o + 6 * n_out:o + 7 * n_out]
            r7 = WT[o + 7 * n_out:o + 8 * n_out]
            for j in range(n_out):
                y[j] += ((a0 * widen(r0[j]) + a1 * widen(r1[j])) + (a2 * widen(r2[j]) + a3 * widen(r3[j]))
                         + ((a4 * widen(r4[j]) + a5 * widen(r5[j])) + (a6 * widen(r6[j]) + a7 * widen(r7[j]))))
    return axpy8


_axpy32 = _make_axpy(_id)
_axpy16 = _make_axpy(k._h2f)
_axpy8_16 = _make_axpy8(k._h2f)


def _make_axpy_steps(axpy):
    @njit(cache=False)
    def steps(x, WT, offs, rows, cols, out, other, reps, times):
        acc = np.float32(0)
        for r in range(reps):
            t0 = _now()
            for g in range(offs.size):
                axpy(x, WT, offs[g], cols[g], rows[g], out)
            for i in range(other.size):
                acc += other[i]
            times[r] = _now() - t0
        return acc
    return steps


_steps_axpy32 = _make_axpy_steps(_axpy32)
_steps_axpy16 = _make_axpy_steps(_axpy16)
_steps_axpy8_16 = _make_axpy_steps(_axpy8_16)
KINDS = ("fp32", "fp16", "axpy32", "axpy16", "axpy8h")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--contexts", default="4:0.25,32:1.25")
    ap.add_argument("--sets", default="mlp,gate,mlp+gate", help=f"comma-separated, of {sorted(SHAPES)}")
    a = ap.parse_args(argv)
    nl = 4
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4096).astype(np.float32)
    out = np.zeros(4096, np.float32)
    hz = tsc_hz()
    cpu = os.environ.get("NUMBA_CPU_NAME", "native")
    print(f"cpu: {cpu}; load {os.getloadavg()[0]:.2f}; µs per step (4 layers), median [min-max] of {a.rounds} rounds")
    sets = {}
    for name, shapes in ((n, SHAPES[n]) for n in a.sets.split(",")):
        offs, rows, cols, n = [], [], [], 0
        for _ in range(nl):
            for (r, c) in shapes:
                offs.append(n)
                rows.append(r)
                cols.append(c)
                n += r * c
        w = (rng.standard_normal(n) / 8).astype(np.float32)
        sets[name] = (np.array(offs), np.array(rows), np.array(cols), w, w.astype(np.float16).view(np.uint16),
                      n * 4 / 1024)
    # the half kernel against numpy on the same rounded weights
    offs, rows, cols, w, h, _ = next(iter(sets.values()))
    o16 = np.zeros(4096, np.float32)
    _steps16(x, h, offs[:1], rows[:1], cols[:1], o16, np.zeros(1, np.float32), 1, np.zeros(1, np.uint64))
    ref = h[:rows[0] * cols[0]].view(np.float16).astype(np.float64).reshape(rows[0], cols[0]) @ x[:cols[0]]
    print(f"fp16 GEMV vs numpy on the same rounded weights: max |diff| {np.abs(o16[:rows[0]] - ref).max():.2e}")
    for ctx in a.contexts.split(","):
        K, mb = ctx.split(":")
        other = rng.standard_normal(max(1, int(float(mb) * 2 ** 20 / 4))).astype(np.float32)
        for name, (offs, rows, cols, w, h, kb) in sets.items():
            res = {kind: [] for kind in KINDS + ("other",)}
            for r in range(a.rounds):
                for kind in KINDS:
                    t = np.zeros(a.steps, np.uint64)
                    if kind == "fp32":
                        _steps32(x, w, offs, rows, cols, out, other, a.steps, t)
                    elif kind == "fp16":
                        _steps16(x, h, offs, rows, cols, out, other, a.steps, t)
                    elif kind == "axpy32":   # (the same numbers as transposed weights: the bytes are what counts)
                        _steps_axpy32(x, w, offs, rows, cols, out, other, a.steps, t)
                    elif kind == "axpy16":
                        _steps_axpy16(x, h, offs, rows, cols, out, other, a.steps, t)
                    else:
                        _steps_axpy8_16(x, h, offs, rows, cols, out, other, a.steps, t)
                    res[kind].append(np.median(t) / hz * 1e6)
                t = np.zeros(a.steps, np.uint64)
                _steps32(x, w, offs[:0], rows[:0], cols[:0], out, other, a.steps, t)
                res["other"].append(np.median(t) / hz * 1e6)
            o = np.median(res["other"])
            s = {kind: np.array(res[kind]) - o for kind in KINDS}
            line = f"K={K:>2} ctx {mb} MB  {name:4s} ({kb:.0f} KB fp32)  other {o:4.1f} |"
            for kind in KINDS:
                line += f" {kind} {np.median(s[kind]):4.2f} [{s[kind].min():.2f}-{s[kind].max():.2f}]"
            line += (f" | saved vs fp32: fp16 {np.median(s['fp32'] - s['fp16']):.2f},"
                     f" axpy16 {np.median(s['fp32'] - s['axpy16']):.2f}, axpy8h {np.median(s['fp32'] - s['axpy8h']):.2f} µs per step")
            print(line)


if __name__ == "__main__":
    main()
