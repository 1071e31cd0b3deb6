"""Probe: the B=1 mixing GEMVs with half-width weights (bfloat16 / float16 widened in registers).

    python bench/probe_half_mix.py [--ks 4,16,32] [--steps 2000] [--rounds 5] [--other-mb 0.6]

The edge config's mixing at B=1 is four GEMVs h += Mcat_l[:, :(K+1)d] V_l (d = 64, K̄ = 32, Mcat
row stride (K̄+1)d) that read every layer's weights once per step: 2.16 MB at K=32, from L3 (the step
does not fit the 1 MB L2). This times those four GEMVs, one "step" after another, with the weights
stored as
  fp32  the engine's kernel (`kernels.gemm_nt`, its 1×8 tiles), the baseline;
  bf16  uint16 = the top half of the float32 (round to nearest even), widened by a 16-bit shift;
  fp16  IEEE half (numpy float16 bits), widened by LLVM's fpext (F16C's vcvtph2ps on x86).
Both half-width kernels are `_tile1x8` with the load replaced by a widening load (a numba intrinsic:
zext/shl/bitcast, or bitcast/fpext), fp32 accumulation as in the engine.
`--other-mb` adds, per step, a read of a buffer of that size (the rest of a real step's working set:
history, filters, MLP and gate weights, ≈ 0.6 MB for edge) so that the weights compete for L2 as they
do inside a step; its time alone is printed and subtracted ("mixing" columns).
Rounds interleave the three kernels; each sample is the median µs per step of `steps` steps.
AVX2 emulation: run with NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= (docs/PERFORMANCE.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from essm_stream import kernels as k  # noqa: E402
from essm_stream.numba_config import njit  # noqa: E402


@intrinsic
def _bf16(typingctx, x):
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        v = builder.zext(args[0], ir.IntType(32))
        v = builder.shl(v, ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(v, ir.FloatType())
    return sig, codegen


@intrinsic
def _fp16(typingctx, x):
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return sig, codegen


def _make_tile(widen):
    @njit(cache=False)
    def tile(A, pa, Bm, pb, ldb, n, out, q):
        A0 = A[pa:pa + n]
        B0 = Bm[pb:pb + n]
        B1 = Bm[pb + ldb:pb + ldb + n]
        B2 = Bm[pb + 2 * ldb:pb + 2 * ldb + n]
        B3 = Bm[pb + 3 * ldb:pb + 3 * ldb + n]
        B4 = Bm[pb + 4 * ldb:pb + 4 * ldb + n]
        B5 = Bm[pb + 5 * ldb:pb + 5 * ldb + n]
        B6 = Bm[pb + 6 * ldb:pb + 6 * ldb + n]
        B7 = Bm[pb + 7 * ldb:pb + 7 * ldb + n]
        z = np.float32(0)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = z
        for m in range(n):
            x = A0[m]
            s0 += x * widen(B0[m])
            s1 += x * widen(B1[m])
            s2 += x * widen(B2[m])
            s3 += x * widen(B3[m])
            s4 += x * widen(B4[m])
            s5 += x * widen(B5[m])
            s6 += x * widen(B6[m])
            s7 += x * widen(B7[m])
        out[q] += s0
        out[q + 1] += s1
        out[q + 2] += s2
        out[q + 3] += s3
        out[q + 4] += s4
        out[q + 5] += s5
        out[q + 6] += s6
        out[q + 7] += s7
    return tile


_tile_bf16 = _make_tile(_bf16)
_tile_fp16 = _make_tile(_fp16)


def _make_steps(tile):
    @njit(cache=False)
    def steps(V, M, h, other, nl, d, ldM, n, reps, times):
        acc = np.float32(0)
        for r in range(reps):
            t0 = _now()
            for l in range(nl):
                for j in range(0, d, 8):
                    tile(V, l * ldM, M, l * d * ldM + j * ldM, ldM, n, h, l * d + j)
            for i in range(other.size):
                acc += other[i]
            times[r] = _now() - t0
        return acc
    return steps


@njit(cache=False)
def _fp32_tile(V, pa, M, pb, ldb, n, h, q):
    k._tile1x8(V, pa, M, pb, ldb, n, h, q, True)


@intrinsic
def _rdtsc(typingctx):
    sig = types.uint64()

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=fnty)
        return builder.call(fn, [])
    return sig, codegen


@njit(cache=False, inline="always")
def _now():
    return _rdtsc()


STEPS = {"fp32": _make_steps(_fp32_tile), "bf16": _make_steps(_tile_bf16), "fp16": _make_steps(_tile_fp16)}


def to_bf16(a):
    """float32 -> bfloat16 bits (uint16), round to nearest even."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def from_bf16(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def tsc_hz():
    _now_py()   # compiled before the interval starts
    t0, c0 = time.perf_counter(), _now_py()
    time.sleep(0.2)
    return (_now_py() - c0) / (time.perf_counter() - t0)


@njit(cache=False)
def _now_py():
    return _rdtsc()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ks", default="4,16,32")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--other-mb", type=float, default=0.6)
    a = ap.parse_args(argv)
    d, kbar, nl = 64, 32, 4
    ldM = (kbar + 1) * d
    rng = np.random.default_rng(0)
    M32 = (rng.standard_normal((nl, d, ldM)) / np.sqrt(ldM)).astype(np.float32)
    W = {"fp32": M32.ravel(), "bf16": to_bf16(M32).ravel(),
         "fp16": M32.astype(np.float16).view(np.uint16).ravel()}
    V = rng.standard_normal(nl * ldM).astype(np.float32)
    other = rng.standard_normal(max(1, int(a.other_mb * 2 ** 20 / 4))).astype(np.float32)
    none = np.zeros(1, np.float32)
    hz = tsc_hz()
    ks = [int(x) for x in a.ks.split(",")]
    # accuracy of the widening against numpy (one GEMV, K̄)
    for name in ("bf16", "fp16"):
        h = np.zeros(nl * d, np.float32)
        STEPS[name](V, W[name], h, none, nl, d, ldM, ldM, 1, np.zeros(1, np.uint64))
        Mw = from_bf16(W[name]) if name == "bf16" else W[name].view(np.float16).astype(np.float32)
        ref = np.einsum("ljm,lm->lj", Mw.reshape(nl, d, ldM).astype(np.float64), V.reshape(nl, ldM))
        print(f"{name} kernel vs numpy on the same rounded weights: max |diff| "
              f"{np.abs(h - ref.ravel()).max():.2e} (|h| max {np.abs(ref).max():.2f})")
    cpu = os.environ.get("NUMBA_CPU_NAME", "native")
    print(f"cpu: {cpu}; load {os.getloadavg()[0]:.2f}; µs per step (4 GEMVs), median [min-max] of {a.rounds} rounds")
    for K in ks:
        n = (K + 1) * d
        res = {key: [] for key in ("fp32", "bf16", "fp16", "other")}
        for r in range(a.rounds):
            for name in ("fp32", "bf16", "fp16"):
                times = np.zeros(a.steps, np.uint64)
                h = np.zeros(nl * d, np.float32)
                STEPS[name](V, W[name], h, other, nl, d, ldM, n, a.steps, times)
                res[name].append(np.median(times) / hz * 1e6)
            times = np.zeros(a.steps, np.uint64)
            STEPS["fp32"](V, W["fp32"], np.zeros(nl * d, np.float32), other, nl, d, ldM, 0, a.steps, times)
            res["other"].append(np.median(times) / hz * 1e6)
        o = np.median(res["other"])
        line = f"K={K:2d}  other-read alone {o:5.1f}"
        for name in ("fp32", "bf16", "fp16"):
            s = np.array(res[name])
            line += f" | {name} {np.median(s):5.1f} [{s.min():.1f}-{s.max():.1f}] mixing {np.median(s) - o:5.1f}"
        g = [(np.array(res["fp32"]) - o) / (np.array(res[x]) - o) for x in ("bf16", "fp16")]
        line += f" | speed-up of the mixing bf16 {np.median(g[0]):.2f}x fp16 {np.median(g[1]):.2f}x"
        print(line)


if __name__ == "__main__":
    main()
