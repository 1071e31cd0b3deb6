"""The streaming step as numba kernels: one small kernel per op, `stream_run` the loop over them.

Everything a step touches lives in a handful of flat arrays, laid out by `layout.Layout`, so that
one call crosses the Python/numba boundary with few arguments and the whole multi-layer step (all
layers, all streams, all frames of a block) runs in compiled code with nothing allocated:

  W      packed weights (engine dtype); segment s of layer l starts at `seg(off, s, l)`
  off    (2 N_SEG,) int64: offset and per-layer stride of every packed segment
  lay    (N_LAY,) int64: named dims, scratch section offsets, work stride, state section offsets
  state  streaming state (engine dtype): the layers' input history (`lay[ST_HIST]`) and the pooled
         head's output ring (`lay[ST_POOL]`), see layout.STATE
  ist    (N_IST,) int64: ring position p, steps seen, pool position, and error details
  work   (B * lay[WL],) per-stream scratch, see layout.SCRATCH

Math (DESIGN.md): per layer u = LN1(h); the window of u is convolved with the reversed filters
`phir[k, τ'] = φ_k(L-1-τ')` for k < K only (a (K × L)·(L × d) product); the gate gives α over the
active prefix; V = [u, α_1 c_1, …, α_K c_K] and h += Mcat[:, :(K+1)d] V with Mcat = [D | σ_k^{1/4} M_k],
so work scales with K: channels above K are neither convolved nor mixed.

Accumulators: the dense products (gemm_nt) accumulate in the engine's dtype (float32 engines
vectorize 8 lanes wide); the short reductions (LayerNorm mean/variance, the gate's norm and softmax
sum, the pooled head's mean) accumulate in float64 for both dtypes, written `ACC(0)` below. (Before
the split this was implicit: `x[i] * 0` promotes float32 * int64 to float64; same bits.)

The plain numpy float64 version of the whole step is `reference.stream_run_ref` (same signature).
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from .layout import (D_GATE, D_HIDDEN, D_IN, D_MODEL, D_OUT, GATED, IST_ERR_B, IST_ERR_J,  # noqa: F401
                     IST_ERR_K, IST_ERR_T, IST_NREPLACED, IST_POOL, IST_POS, IST_T, K_MAX, L_WIN, MLP,
                     N_IST, N_LAYERS, O_B1, O_B2, O_EPS, O_FC1B, O_FC1W, O_FC2B, O_FC2W, O_INPB, O_INPW,
                     O_LN1B, O_LN1G, O_LN2B, O_LN2G, O_LNFB, O_LNFG, O_MCAT, O_OUTB, O_OUTW, O_PHIR,
                     O_W1, O_W2, POOL_W, POOLED, ST_HIST, ST_POOL, W_A, W_G, W_H, W_O, W_S, W_U, W_V,
                     W_X, W_Z, WL, W_UNDO, IST_SKIPPED, WB_C)
from .kernels_lds import lds_convolve, lds_ring, lds_undo
from .kernels_lru import lru_mix, lru_undo
from .gemv import CHUNK as GEMV_CHUNK, STREAM_AHEAD, VW as GEMV_VW, gemv_stream, gemv_t
from .layout import CONV_SMALL, GEMM_T, GEMV1, GEMV_BLOCK, HIST_BLK, LDS, LRU_KIND, MIX16, MLP16, O_FC1H, O_FC2H, O_MCATH, PAR_MIN_B, PAR_MIN_K, THREADS, WB_HP, hist_block
from .numba_config import JIT_DISABLED, njit, prefetch_bytes, stream_step_min, window_prefetch_min
from .simd import (HALF_COLS, LINE, SMALL_MAX, SMALL_MIN, TAU_BLOCK, TILE_GEMV_MAX, conv_product_pf, min_cols, small_product_pf,
                   row_tiles, tile_product, tile_product_pf)

OK, ERR_NONFINITE, ERR_BUDGET, ERR_OVERFLOW = 0, 1, 2, 3
# Frame ist[IST_ERR_T] (of this call's block) overflowed and the step stopped there with its writes
# still in the state: the caller takes it back with undo_for(lay) and decides (engine._overflowed).
# The undo is a kernel of its own, compiled on the first overflow only: inside the step it cost every
# cold start ~0.7 s of compiling for a path that most processes never take.
ERR_UNDO = 4
MODE_FIR, MODE_LDS, MODE_LRU = 0, 1, 2   # a layer's mixer: ring-buffer FIR, LDS ladder, LRU recurrence
# ring-buffer FIR whose products of up to lay[CONV_SMALL] filter rows run the register-tiled product
# (simd.conv_product) instead of BLAS: a mode of its own, so that a layout that asks for BLAS alone
# (conv_small = 1) compiles no tile
MODE_FIR_SMALL = 3
# ring-buffer FIR whose convolution and mixing are split into lay[THREADS] tasks that run on numba's
# thread pool (the engine's threads=N): the streams for B >= 4 N, the filter channels below
MODE_FIR_PAR = 4
# MODE_FIR / MODE_FIR_SMALL whose mixing reads the float16 copy of Mcat (lay[MIX16], segment Mcat.h):
# programs with mix_weights="fp16" on float32 engines (modes of their own: nothing else compiles them)
MODE_FIR_H, MODE_FIR_SMALL_H = 5, 6
# MODE_FIR_H / MODE_FIR_SMALL_H whose MLP reads the float16 copies of fc1.W / fc2.W too (lay[MLP16]:
# fp16 programs whose MLP weights are float16 values); modes of their own, so that each fp16 kernel
# compiles one MLP (the half one here, the float32 one for the first version's files), not both
MODE_FIR_HM, MODE_FIR_SMALL_HM = 7, 8
# (one float32 stream whose products are all GEMVs and whose convolution is always the register tile
# has an entry point of its own, stream_run_fir_one, with its own short step loop: see there)

ACC = np.float64   # accumulator of the short reductions (see module doc)


# --------------------------------------------------------------------------------------------
# Small dense products. out[i, j] (=|+=) Σ_m A[a0 + i lda + m] · B[b0 + j ldb + m]: both operands
# contiguous along the reduction, so every inner loop is a plain dot product that LLVM
# vectorizes (fastmath lets it keep several partial sums). Slices are views: nothing allocates.
# --------------------------------------------------------------------------------------------

@njit
def _tile4x4(A, pa, lda, Bm, pb, ldb, n, out, q, ldo, acc):
    """out[q + i ldo + j] (=, or += if acc) Σ_m A_i[m] B_j[m] for i, j < 4."""
    A0 = A[pa:pa + n]
    A1 = A[pa + lda:pa + lda + n]
    A2 = A[pa + 2 * lda:pa + 2 * lda + n]
    A3 = A[pa + 3 * lda:pa + 3 * lda + n]
    B0 = Bm[pb:pb + n]
    B1 = Bm[pb + ldb:pb + ldb + n]
    B2 = Bm[pb + 2 * ldb:pb + 2 * ldb + n]
    B3 = Bm[pb + 3 * ldb:pb + 3 * ldb + n]
    z = out.dtype.type(0)   # (out[q] * 0 would be float64: float32 * int64 promotes)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = z
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = z
    for m in range(n):
        x0 = A0[m]
        x1 = A1[m]
        x2 = A2[m]
        x3 = A3[m]
        y0 = B0[m]
        y1 = B1[m]
        y2 = B2[m]
        y3 = B3[m]
        s00 += x0 * y0
        s01 += x0 * y1
        s02 += x0 * y2
        s03 += x0 * y3
        s10 += x1 * y0
        s11 += x1 * y1
        s12 += x1 * y2
        s13 += x1 * y3
        s20 += x2 * y0
        s21 += x2 * y1
        s22 += x2 * y2
        s23 += x2 * y3
        s30 += x3 * y0
        s31 += x3 * y1
        s32 += x3 * y2
        s33 += x3 * y3
    if acc:
        out[q] += s00
        out[q + 1] += s01
        out[q + 2] += s02
        out[q + 3] += s03
        out[q + ldo] += s10
        out[q + ldo + 1] += s11
        out[q + ldo + 2] += s12
        out[q + ldo + 3] += s13
        out[q + 2 * ldo] += s20
        out[q + 2 * ldo + 1] += s21
        out[q + 2 * ldo + 2] += s22
        out[q + 2 * ldo + 3] += s23
        out[q + 3 * ldo] += s30
        out[q + 3 * ldo + 1] += s31
        out[q + 3 * ldo + 2] += s32
        out[q + 3 * ldo + 3] += s33
    else:
        out[q] = s00
        out[q + 1] = s01
        out[q + 2] = s02
        out[q + 3] = s03
        out[q + ldo] = s10
        out[q + ldo + 1] = s11
        out[q + ldo + 2] = s12
        out[q + ldo + 3] = s13
        out[q + 2 * ldo] = s20
        out[q + 2 * ldo + 1] = s21
        out[q + 2 * ldo + 2] = s22
        out[q + 2 * ldo + 3] = s23
        out[q + 3 * ldo] = s30
        out[q + 3 * ldo + 1] = s31
        out[q + 3 * ldo + 2] = s32
        out[q + 3 * ldo + 3] = s33


@njit
def _tile1x4(A, pa, Bm, pb, ldb, n, out, q, ldo, acc):
    """One row of A against four rows of B: out[q + c ldo] for c < 4."""
    A0 = A[pa:pa + n]
    B0 = Bm[pb:pb + n]
    B1 = Bm[pb + ldb:pb + ldb + n]
    B2 = Bm[pb + 2 * ldb:pb + 2 * ldb + n]
    B3 = Bm[pb + 3 * ldb:pb + 3 * ldb + n]
    z = out.dtype.type(0)   # (out[q] * 0 would be float64: float32 * int64 promotes)
    s0 = s1 = s2 = s3 = z
    for m in range(n):
        x = A0[m]
        s0 += x * B0[m]
        s1 += x * B1[m]
        s2 += x * B2[m]
        s3 += x * B3[m]
    if acc:
        out[q] += s0
        out[q + ldo] += s1
        out[q + 2 * ldo] += s2
        out[q + 3 * ldo] += s3
    else:
        out[q] = s0
        out[q + ldo] = s1
        out[q + 2 * ldo] = s2
        out[q + 3 * ldo] = s3


@njit
def _tile1x8(A, pa, Bm, pb, ldb, n, out, q, acc):
    """One row of A against eight rows of B (a GEMV, B=1): out[q + c] for c < 8."""
    A0 = A[pa:pa + n]
    B0 = Bm[pb:pb + n]
    B1 = Bm[pb + ldb:pb + ldb + n]
    B2 = Bm[pb + 2 * ldb:pb + 2 * ldb + n]
    B3 = Bm[pb + 3 * ldb:pb + 3 * ldb + n]
    B4 = Bm[pb + 4 * ldb:pb + 4 * ldb + n]
    B5 = Bm[pb + 5 * ldb:pb + 5 * ldb + n]
    B6 = Bm[pb + 6 * ldb:pb + 6 * ldb + n]
    B7 = Bm[pb + 7 * ldb:pb + 7 * ldb + n]
    z = out.dtype.type(0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = z
    for m in range(n):
        x = A0[m]
        s0 += x * B0[m]
        s1 += x * B1[m]
        s2 += x * B2[m]
        s3 += x * B3[m]
        s4 += x * B4[m]
        s5 += x * B5[m]
        s6 += x * B6[m]
        s7 += x * B7[m]
    if acc:
        out[q] += s0
        out[q + 1] += s1
        out[q + 2] += s2
        out[q + 3] += s3
        out[q + 4] += s4
        out[q + 5] += s5
        out[q + 6] += s6
        out[q + 7] += s7
    else:
        out[q] = s0
        out[q + 1] = s1
        out[q + 2] = s2
        out[q + 3] = s3
        out[q + 4] = s4
        out[q + 5] = s5
        out[q + 6] = s6
        out[q + 7] = s7


@njit
def _tile1x1(A, pa, Bm, pb, n, out, q, acc):
    A0 = A[pa:pa + n]
    B0 = Bm[pb:pb + n]
    s = out.dtype.type(0)
    for m in range(n):
        s += A0[m] * B0[m]
    if acc:
        out[q] += s
    else:
        out[q] = s


@njit
def gemm_nt(A, a0, lda, Bm, b0, ldb, n, out, o0, ldo, Ma, Nb, acc):
    """out[o0 + i ldo + j] (=, or += if acc) Σ_{m<n} A[a0 + i lda + m] B[b0 + j ldb + m], i<Ma, j<Nb."""
    # The tiles take acc and unit strides as run-time values, not literals: numba compiles a
    # separate specialization of a callee for every literal argument (acc=True/False, ldo=1), and
    # those doubled the tiles' compile time on a cold start for a branch taken once per tile.
    racc = bool(acc)
    one = min(Nb, 1)
    i = 0
    while i + 4 <= Ma:
        j = 0
        while j + 4 <= Nb:
            _tile4x4(A, a0 + i * lda, lda, Bm, b0 + j * ldb, ldb, n, out, o0 + i * ldo + j, ldo, racc)
            j += 4
        while j < Nb:  # a column of B against four rows of A
            _tile1x4(Bm, b0 + j * ldb, A, a0 + i * lda, lda, n, out, o0 + i * ldo + j, ldo, racc)
            j += 1
        i += 4
    while i < Ma:
        j = 0
        while j + 8 <= Nb:  # single rows (B=1 GEMVs): eight outputs share each load of A
            _tile1x8(A, a0 + i * lda, Bm, b0 + j * ldb, ldb, n, out, o0 + i * ldo + j, racc)
            j += 8
        while j + 4 <= Nb:
            _tile1x4(A, a0 + i * lda, Bm, b0 + j * ldb, ldb, n, out, o0 + i * ldo + j, one, racc)
            j += 4
        while j < Nb:
            _tile1x1(A, a0 + i * lda, Bm, b0 + j * ldb, n, out, o0 + i * ldo + j, racc)
            j += 1
        i += 1


# --------------------------------------------------------------------------------------------
# The same products with B stored as IEEE half bits (uint16): a program with mix_weights="fp16"
# (layout segment "Mcat.h"). Each weight is widened to float32 as it is loaded (`_h2f`: LLVM's
# fpext from half, F16C's vcvtph2ps on x86, one instruction per 8 values), then the float32 dot
# products of the tiles above; half the bytes of the B=1 mixing, which reads Mcat from L3
# (docs/PERFORMANCE.md "Half-width mixing weights"). Groups of four streams run 4 × 4 register tiles
# (each weight row widened once per group), single streams the 8-row GEMV tile, the rest one by one.
# --------------------------------------------------------------------------------------------

if JIT_DISABLED:
    def _h2f(x):
        return np.float32(np.uint16(x).view(np.float16))
else:
    @intrinsic
    def _h2f(typingctx, x):
        """float16 bits (uint16) -> float32, exactly."""
        sig = types.float32(types.uint16)

        def codegen(context, builder, signature, args):
            return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
        return sig, codegen


@njit
def _tile1x8h(A, pa, H, pb, ldb, n, out, q):
    """out[q + c] += Σ_m A[pa + m] half(H[pb + c ldb + m]) for c < 8."""
    A0 = A[pa:pa + n]
    B0 = H[pb:pb + n]
    B1 = H[pb + ldb:pb + ldb + n]
    B2 = H[pb + 2 * ldb:pb + 2 * ldb + n]
    B3 = H[pb + 3 * ldb:pb + 3 * ldb + n]
    B4 = H[pb + 4 * ldb:pb + 4 * ldb + n]
    B5 = H[pb + 5 * ldb:pb + 5 * ldb + n]
    B6 = H[pb + 6 * ldb:pb + 6 * ldb + n]
    B7 = H[pb + 7 * ldb:pb + 7 * ldb + n]
    z = out.dtype.type(0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = z
    for m in range(n):
        x = A0[m]
        s0 += x * _h2f(B0[m])
        s1 += x * _h2f(B1[m])
        s2 += x * _h2f(B2[m])
        s3 += x * _h2f(B3[m])
        s4 += x * _h2f(B4[m])
        s5 += x * _h2f(B5[m])
        s6 += x * _h2f(B6[m])
        s7 += x * _h2f(B7[m])
    out[q] += s0
    out[q + 1] += s1
    out[q + 2] += s2
    out[q + 3] += s3
    out[q + 4] += s4
    out[q + 5] += s5
    out[q + 6] += s6
    out[q + 7] += s7


@njit
def _tile4x4h(A, pa, lda, H, pb, ldb, n, out, q, ldo):
    """out[q + i ldo + j] += Σ_m A_i[m] half(H_j[m]) for i, j < 4 (four streams against four weight rows)."""
    A0 = A[pa:pa + n]
    A1 = A[pa + lda:pa + lda + n]
    A2 = A[pa + 2 * lda:pa + 2 * lda + n]
    A3 = A[pa + 3 * lda:pa + 3 * lda + n]
    B0 = H[pb:pb + n]
    B1 = H[pb + ldb:pb + ldb + n]
    B2 = H[pb + 2 * ldb:pb + 2 * ldb + n]
    B3 = H[pb + 3 * ldb:pb + 3 * ldb + n]
    z = out.dtype.type(0)
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = z
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = z
    for m in range(n):
        x0 = A0[m]
        x1 = A1[m]
        x2 = A2[m]
        x3 = A3[m]
        y0 = _h2f(B0[m])
        y1 = _h2f(B1[m])
        y2 = _h2f(B2[m])
        y3 = _h2f(B3[m])
        s00 += x0 * y0
        s01 += x0 * y1
        s02 += x0 * y2
        s03 += x0 * y3
        s10 += x1 * y0
        s11 += x1 * y1
        s12 += x1 * y2
        s13 += x1 * y3
        s20 += x2 * y0
        s21 += x2 * y1
        s22 += x2 * y2
        s23 += x2 * y3
        s30 += x3 * y0
        s31 += x3 * y1
        s32 += x3 * y2
        s33 += x3 * y3
    out[q] += s00
    out[q + 1] += s01
    out[q + 2] += s02
    out[q + 3] += s03
    out[q + ldo] += s10
    out[q + ldo + 1] += s11
    out[q + ldo + 2] += s12
    out[q + ldo + 3] += s13
    out[q + 2 * ldo] += s20
    out[q + 2 * ldo + 1] += s21
    out[q + 2 * ldo + 2] += s22
    out[q + 2 * ldo + 3] += s23
    out[q + 3 * ldo] += s30
    out[q + 3 * ldo + 1] += s31
    out[q + 3 * ldo + 2] += s32
    out[q + 3 * ldo + 3] += s33


@njit
def _tile1x1h(A, pa, H, pb, n, out, q):
    A0 = A[pa:pa + n]
    B0 = H[pb:pb + n]
    s = out.dtype.type(0)
    for m in range(n):
        s += A0[m] * _h2f(B0[m])
    out[q] += s


@njit
def gemm_nt_h(A, a0, lda, H, b0, ldb, n, out, o0, ldo, Ma, Nb):
    """out[o0 + i ldo + j] += Σ_{m<n} A[a0 + i lda + m] half(H[b0 + j ldb + m]), i < Ma, j < Nb."""
    i = 0
    while i + 4 <= Ma:          # four streams: 4 × 4 register tiles, each weight row read once per group
        j = 0
        while j + 4 <= Nb:
            _tile4x4h(A, a0 + i * lda, lda, H, b0 + j * ldb, ldb, n, out, o0 + i * ldo + j, ldo)
            j += 4
        while j < Nb:
            for r in range(i, i + 4):
                _tile1x1h(A, a0 + r * lda, H, b0 + j * ldb, n, out, o0 + r * ldo + j)
            j += 1
        i += 4
    if i < Ma:
        j = 0
        while j + 8 <= Nb:      # eight weight rows, each remaining row of A against them
            for r in range(i, Ma):
                _tile1x8h(A, a0 + r * lda, H, b0 + j * ldb, ldb, n, out, o0 + r * ldo + j)
            j += 8
        while j < Nb:
            for r in range(i, Ma):
                _tile1x1h(A, a0 + r * lda, H, b0 + j * ldb, n, out, o0 + r * ldo + j)
            j += 1


def gemm_nt_ref(A, a0, lda, Bm, b0, ldb, n, out, o0, ldo, Ma, Nb, acc):
    for i in range(Ma):
        for j in range(Nb):
            s = float(np.dot(A[a0 + i * lda:a0 + i * lda + n], Bm[b0 + j * ldb:b0 + j * ldb + n]))
            if acc:
                out[o0 + i * ldo + j] += s
            else:
                out[o0 + i * ldo + j] = s


# --------------------------------------------------------------------------------------------
# Pointwise pieces
# --------------------------------------------------------------------------------------------

@njit
def _layer_norm(x, xo, g, go, bb, bo, n, eps, out, oo):
    """out[oo:oo+n] = LN(x[xo:xo+n]) g + b; mean and variance accumulate in float64 (ACC).

    Every loop runs over slices (views), not x[xo + j]: numba wraps a possibly negative flat index
    (xo + j < 0 reads from the end), and that select keeps LLVM from vectorizing the loop (the
    GELU written that way ran scalar, ≈ 4x slower; bench/profile_ops.py)."""
    xs = x[xo:xo + n]
    gs = g[go:go + n]
    bs = bb[bo:bo + n]
    os_ = out[oo:oo + n]
    mu = ACC(0)
    for j in range(n):
        mu += xs[j]
    mu /= n
    var = ACC(0)
    for j in range(n):
        c = xs[j] - mu
        var += c * c
    var /= n
    r = 1.0 / math.sqrt(var + eps)
    for j in range(n):
        os_[j] = (xs[j] - mu) * r * gs[j] + bs[j]


# erf(z) ≈ z P(z²) / Q(z²) on z ∈ [-4, 4] (clamped: |erf| rounds to 1 in float32 beyond), the
# rational fit of Eigen's `generic_fast_erf_float`; evaluated in float64 its error is < 7e-8, below
# float32 resolution. Branch-free, so LLVM vectorizes it (libm `erf` is a scalar call per element).
_ERF_P = (-1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04, -5.69250639462346e-05,
          -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10)
_ERF_Q = (-1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03, -2.13374055278905e-04,
          -1.45660718464996e-05)
# float32 engines evaluate it in float32 (the fit is Eigen's for float32 evaluation: a few float32 ulp, far
# inside the engine's tolerance): no float64 conversions per value; the AVX2-compiled edge step at K=32
# 42.2 -> 40.4 µs with it (bench/tree_step.py, docs/PERFORMANCE.md "Session 11")
_ERF_P32 = tuple(np.float32(c) for c in _ERF_P)
_ERF_Q32 = tuple(np.float32(c) for c in _ERF_Q)
_F32_RSQRT2, _F32_HALF, _F32_ONE, _F32_CLAMP = (np.float32(0.7071067811865476), np.float32(0.5), np.float32(1.0),
                                                np.float32(4.0))


@njit(inline="always")
def _gelu32(v):
    """GELU of a float32 value in float32 arithmetic (the rational erf above, clamped to [-4, 4])."""
    p0, p1, p2, p3, p4, p5, p6 = _ERF_P32
    q0, q1, q2, q3, q4 = _ERF_Q32
    z = min(max(v * _F32_RSQRT2, -_F32_CLAMP), _F32_CLAMP)
    z2 = z * z
    p = z * (p0 + z2 * (p1 + z2 * (p2 + z2 * (p3 + z2 * (p4 + z2 * (p5 + z2 * p6))))))
    q = q0 + z2 * (q1 + z2 * (q2 + z2 * (q3 + z2 * q4)))
    return _F32_HALF * v * (_F32_ONE + p / q)


@njit
def _gelu(x, xo, n):
    xs = x[xo:xo + n]     # a slice, not x[xo + j]: see _layer_norm (vectorization)
    if x.itemsize == 4:   # float32 engine: the vectorized rational erf in float32 (compile-time branch)
        for j in range(n):
            xs[j] = _gelu32(xs[j])
    else:                 # float64 engine: libm erf, as the reference
        for j in range(n):
            v = xs[j]
            xs[j] = 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))


@njit
def _bias_gelu(x, xo, W, bo, n):
    """x[xo:xo+n] = GELU(x[xo:xo+n] + W[bo:bo+n]): the bias add in the GELU's pass (same roundings
    as adding, storing and then applying _gelu). Slices, not flat indices (see _layer_norm)."""
    xs = x[xo:xo + n]
    ws = W[bo:bo + n]
    if x.itemsize == 4:
        for j in range(n):
            xs[j] = _gelu32(xs[j] + ws[j])   # (W float32 too: the sum in float32, as when stored)
    else:
        for j in range(n):
            v = xs[j] + ws[j]
            xs[j] = 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))


@njit(inline="always")
def seg(off, s, l):
    """Start of layer l's part of packed segment s in W."""
    return off[2 * s] + l * off[2 * s + 1]


@njit(inline="always")
def _add_bias(work, B, wl, o, W, bo, n):
    """work[b wl + o + i] += W[bo + i] for every stream."""
    for b in range(B):
        wb = b * wl + o
        for i in range(n):
            work[wb + i] += W[bo + i]


@njit   # a call, not inlined: three call sites would type and lower three copies (cold start)
def _layer_norm_streams(work, B, wl, src, dst, W, go, bo, n, eps):
    """work[dst] = LN(work[src]) g + b for every stream."""
    for b in range(B):
        _layer_norm(work, b * wl + src, W, go, W, bo, n, eps, work, b * wl + dst)


# --------------------------------------------------------------------------------------------
# Input checks (before any state changes)
# --------------------------------------------------------------------------------------------

@njit(fastmath=False)  # fastmath would assume no NaN/Inf and fold the check away
def first_nonfinite(a, o, n):
    """Index i < n of the first non-finite a[o + i], or -1."""
    for i in range(n):
        if not np.isfinite(a[o + i]):
            return i
    return -1


@njit(inline="always")   # integer checks only: the float check is first_nonfinite's (fastmath off)
def check_inputs(X, Ks, lay, ist, nan_zero):
    """Status of a block before any state changes: OK, ERR_BUDGET or ERR_NONFINITE (where in ist)."""
    T, B, d_in = X.shape
    Kb = lay[K_MAX]
    for t in range(T):
        for b in range(B):
            k = Ks[t, b]
            if k < 1 or k > Kb:
                ist[IST_ERR_T] = t
                ist[IST_ERR_B] = b
                ist[IST_ERR_K] = k
                return ERR_BUDGET
    if not nan_zero:
        i = first_nonfinite(X.reshape(-1), 0, T * B * d_in)   # X is C-contiguous: (t, b, j) in order
        if i >= 0:
            ist[IST_ERR_T] = i // (B * d_in)
            ist[IST_ERR_B] = (i // d_in) % B
            ist[IST_ERR_J] = i % d_in
            return ERR_NONFINITE
    return OK


@njit(fastmath=False)
def _load_frame(X, t, b, work, o, d_in, ist):
    """work[o:o+d_in] = X[t, b] with NaN/Inf read as 0 (kept out of fastmath, which assumes finite)."""
    for j in range(d_in):
        v = X[t, b, j]
        if np.isfinite(v):
            work[o + j] = v
        else:
            work[o + j] = 0.0
            ist[IST_NREPLACED] += 1


# --------------------------------------------------------------------------------------------
# The ops of one step, in the order stream_run calls them. Each works on all B streams of frame t.
# inline="always": numba inlines them into stream_run (measured: no slower than the one-function
# kernel they replaced; plain calls cost up to ~10 % on small configs).
# --------------------------------------------------------------------------------------------

# The one-stream GEMVs' outputs are zeroed (or set to the bias) before gemv_t adds into them, by loops
# over views (z = work[o:o + n]; z[i] = 0.0), not over flat indices work[o + i]: numba may wrap a flat
# index when negative, and LLVM kept such a loop scalar; a vector load of gemv_t that spans several scalar
# stores is not served from the store buffer and waits until they reach L1 (AVX2-compiled edge step, K=4:
# 10.7 -> 9.6 µs, docs/PERFORMANCE.md "Session 11"). Written out at each site, not as an inlined helper
# (three inlined copies cost ≈ 0.15 s of the demo kernel's cold compile).


@njit(inline="always")
def _input_gemv(W, off, lay, work):
    """h = b_in, then += W_in x with inp.W input-major (one stream, lay[GEMV1])."""
    d_in, d = lay[D_IN], lay[D_MODEL]
    hs, bs = lay[W_H], seg(off, O_INPB, 0)   # (a loop: an array-to-array slice assignment compiles
    h, b = work[hs:hs + d], W[bs:bs + d]     # numba's unicode error-message helpers, +2 s of a cold start;
    for i in range(d):                      # over views: vector stores, which gemv_t's vector loads of h
        h[i] = b[i]                          # take from the store buffer: the note above)
    gemv_t(work, lay[W_X], W, seg(off, O_INPW, 0), d, d_in, d, work, lay[W_H])


@njit(fastmath=False)
def _load_row(X1, x0, work, o, n, ist):
    """_load_frame of a flat frame: work[o:o+n] = X1[x0:x0+n] with NaN/Inf read as 0."""
    for j in range(n):
        v = X1[x0 + j]
        if np.isfinite(v):
            work[o + j] = v
        else:
            work[o + j] = 0.0
            ist[IST_NREPLACED] += 1


@njit(inline="always")
def input_projection_one(X1, t, W, off, lay, work, ist):
    """input_projection of stream_run_fir_one (one stream, GEMV only; the frames flat)."""
    _load_row(X1, t * lay[D_IN], work, lay[W_X], lay[D_IN], ist)
    _input_gemv(W, off, lay, work)


@njit(inline="always")
def check_inputs_one(X1, Ks, lay, ist, nan_zero):
    """check_inputs of stream_run_fir_one: T = Ks.shape[0] frames of one stream, X1 flat (T d_in,)."""
    T, d_in, Kb = Ks.shape[0], lay[D_IN], lay[K_MAX]
    for t in range(T):
        k = Ks[t, 0]
        if k < 1 or k > Kb:
            ist[IST_ERR_T] = t
            ist[IST_ERR_B] = 0
            ist[IST_ERR_K] = k
            return ERR_BUDGET
    if not nan_zero:
        i = first_nonfinite(X1, 0, T * d_in)
        if i >= 0:
            ist[IST_ERR_T] = i // d_in
            ist[IST_ERR_B] = 0
            ist[IST_ERR_J] = i % d_in
            return ERR_NONFINITE
    return OK


@njit(inline="always")
def input_projection(X, t, W, off, lay, work, ist):
    """h = W_in x_t + b_in."""
    B = X.shape[1]
    wl, d_in, d = lay[WL], lay[D_IN], lay[D_MODEL]
    for b in range(B):
        _load_frame(X, t, b, work, b * wl + lay[W_X], d_in, ist)
    if lay[GEMV1] != 0:   # one stream, float32: inp.W packed input-major (gemv.gemv_t)
        _input_gemv(W, off, lay, work)
    else:
        gemm_nt(work, lay[W_X], wl, W, seg(off, O_INPW, 0), d_in, d_in, work, lay[W_H], wl, B, d, wl < 0)
        _add_bias(work, B, wl, lay[W_H], W, seg(off, O_INPB, 0), d)


_hist_block = njit(inline="always")(hist_block)   # layout.hist_block, compiled


@njit(inline="always")
def ring_write(state, work, lay, B, l, p):
    """Record u of every stream in layer l's history at rows p and p + L of its block (so the window
    of a block's streams is one contiguous block of rows); V[:d] = u (D's input).

    The values overwritten (u of L frames ago) are kept in work[W_UNDO] until the frame is accepted."""
    wl, d, L = lay[WL], lay[D_MODEL], lay[L_WIN]
    su, sv, sundo = lay[W_U], lay[W_V], lay[W_UNDO]   # (locals: no reload per store)
    for i in range((B + lay[HIST_BLK] - 1) // lay[HIST_BLK]):
        o, w, b0, nb = _hist_block(lay, B, l, i)
        r0 = o + p * w                                # row p of the block; row p + L is L w further
        r1 = r0 + L * w
        for bi in range(nb):
            wb = (b0 + bi) * wl
            u = work[wb + su:wb + su + d]
            v = work[wb + sv:wb + sv + d]
            undo = work[wb + sundo + l * d:wb + sundo + (l + 1) * d]
            h0 = state[r0 + bi * d:r0 + (bi + 1) * d]
            h1 = state[r1 + bi * d:r1 + (bi + 1) * d]
            for j in range(d):
                x = u[j]
                undo[j] = h0[j]
                h0[j] = x
                h1[j] = x
                v[j] = x


@njit(inline="always")
def ring_write_one(state, work, lay, l, p):
    """ring_write of one stream (stream_run_fir_one_narrow): the same stores without the loops over
    blocks and streams, which its kernel compiled and never iterated (cold start, docs/PERFORMANCE.md
    "Session 12, round 2")."""
    d, L = lay[D_MODEL], lay[L_WIN]
    o, w, b0, nb = _hist_block(lay, 1, l, 0)
    r0 = o + p * w
    su, sv, sundo = lay[W_U], lay[W_V], lay[W_UNDO]
    u = work[su:su + d]
    v = work[sv:sv + d]
    undo = work[sundo + l * d:sundo + (l + 1) * d]
    h0 = state[r0:r0 + d]
    h1 = state[r0 + L * w:r0 + L * w + d]
    for j in range(d):
        x = u[j]
        undo[j] = h0[j]
        h0[j] = x
        h1[j] = x
        v[j] = x


@njit(inline="always")
def gate(Ks, t, W, off, lay, work, B, l, Kt, gate_eps):
    """α = softmax(s̃_{1:K}), s̃ = s √K / (‖s_{1:K}‖ + ε), s = W2 GELU(W1 u + b1) + b2 (Eq. 8), into work[W_S]."""
    gate_v(Ks, t, W, off, lay, work, B, l, Kt, gate_eps, work.itemsize == 4)


@njit(inline="always")
def gate_v(Ks, t, W, off, lay, work, B, l, Kt, gate_eps, vec):
    """gate, its softmax by _gate_softmax_v(vec)."""
    wl, d, dg = lay[WL], lay[D_MODEL], lay[D_GATE]
    sg, ss = lay[W_G], lay[W_S]
    if lay[GEMV1] != 0:   # one stream, float32: W1 and W2 input-major (gemv.gemv_t)
        _gate_gemv(W, off, lay, work, l, Kt)
    else:
        gemm_nt(work, lay[W_U], wl, W, seg(off, O_W1, l), d, d, work, sg, wl, B, dg, wl < 0)
        b1 = seg(off, O_B1, l)
        for b in range(B):
            _bias_gelu(work, b * wl + sg, W, b1, dg)   # + b1 in GELU's pass
        gemm_nt(work, sg, wl, W, seg(off, O_W2, l), dg, dg, work, ss, wl, B, Kt, wl < 0)   # rows < max K only
    _gate_softmax_v(Ks, t, W, off, lay, work, B, l, gate_eps, vec)


@njit(inline="always")
def _gate_gemv(W, off, lay, work, l, Kt):
    """The gate's scores s = W2 GELU(W1 u + b1) of one stream, W1 and W2 input-major; K_t rounded up to
    whole vectors (the scores past K_t are not read)."""
    d, dg = lay[D_MODEL], lay[D_GATE]
    sg, ss = lay[W_G], lay[W_S]
    z = work[sg:sg + dg]   # (a view: see above _input_gemv)
    for i in range(dg):
        z[i] = 0.0
    gemv_t(work, lay[W_U], W, seg(off, O_W1, l), dg, d, dg, work, sg)
    _bias_gelu(work, sg, W, seg(off, O_B1, l), dg)
    nk = min(lay[K_MAX], (Kt + GEMV_VW - 1) // GEMV_VW * GEMV_VW)
    z = work[ss:ss + nk]   # (a view: see above _input_gemv)
    for i in range(nk):
        z[i] = 0.0
    gemv_t(work, sg, W, seg(off, O_W2, l), lay[K_MAX], dg, nk, work, ss)


@njit(inline="always")
def gate_one(Ks, t, W, off, lay, work, l, Kt, gate_eps):
    """gate of stream_run_fir_one (one stream, GEMV only)."""
    _gate_gemv(W, off, lay, work, l, Kt)
    _softmax_one(work, lay[W_S], W, seg(off, O_B2, l), Ks[t, 0], gate_eps)


# exp(x) for x <= 0 without a libm call (so LLVM vectorizes the loop it is in): exp(x / 2^8)^(2^8), x clamped
# at -EXP_MIN (exp(-100) ~ 4e-44: 0 or a denormal in float32, as exp of anything below is), the first factor by
# its Taylor polynomial of degree 11 on [-0.39, 0] (the 8 squarings multiply its error by 256: < 1e-11
# relative, float32 rounding is 6e-8), all in float64. _softmax_one's arguments are >= -2 sqrt(K) (the scaled
# scores' |s̃_k| <= sqrt(K)): above the clamp for K <= 2500.
EXP_MIN = 100.0
_EXP_C = tuple(1.0 / math.factorial(i) for i in range(12))


@njit(inline="always")
def _exp_neg(x):
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11 = _EXP_C
    r = max(x, -EXP_MIN) * (1.0 / 256.0)
    e = c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * (c7 + r * (c8 + r * (c9 + r * (
        c10 + r * c11))))))))))
    for _ in range(8):
        e = e * e
    return e


@njit(inline="always")
def _softmax_one(work, ss, W, b2, K, gate_eps):
    """_gate_softmax of one stream (stream_run_fir_one): its loops over views of the K scores (no flat
    indices, which numba wraps and LLVM then keeps scalar) and the exponentials by _exp_neg (no libm call
    per score), so each loop is vector code. The same maths in float64 as _gate_softmax."""
    sc = work[ss:ss + K]
    bs = W[b2:b2 + K]
    nrm = ACC(0)
    for k in range(K):
        v = sc[k] + bs[k]
        sc[k] = v
        nrm += ACC(v) * v
    scale = math.sqrt(K) / (math.sqrt(nrm) + gate_eps)
    mx = sc[0] * scale   # (not -inf: fastmath's ninf makes an infinite operand undefined)
    for k in range(K):
        v = sc[k] * scale
        sc[k] = v
        mx = max(mx, v)
    tot = ACC(0)
    for k in range(K):
        e = _exp_neg(sc[k] - mx)
        sc[k] = e
        tot += e
    inv = 1.0 / tot
    for k in range(K):
        sc[k] *= inv


@njit(inline="always")
def _gate_softmax(Ks, t, W, off, lay, work, B, l, gate_eps):
    """α = softmax(s̃_{1:K}), s̃ = s √K / (‖s_{1:K}‖ + ε) with s += b2, for each stream's own K; a float32
    engine's by _softmax_one (vector code, _exp_neg: no libm call per score), a float64 one's by libm's exp."""
    _gate_softmax_v(Ks, t, W, off, lay, work, B, l, gate_eps, work.itemsize == 4)


@njit(inline="always")
def _gate_softmax_v(Ks, t, W, off, lay, work, B, l, gate_eps, vec):
    """_gate_softmax, each stream's by _softmax_one where vec (the float32 B = 1 step's maths: its
    exponential is _exp_neg's, < 1e-11 relative, not libm's), else by the loop below."""
    wl, ss = lay[WL], lay[W_S]
    b2 = seg(off, O_B2, l)
    if vec:
        for b in range(B):
            _softmax_one(work, b * wl + ss, W, b2, Ks[t, b], gate_eps)
        return
    for b in range(B):
        wb = b * wl + ss
        K = Ks[t, b]
        nrm = ACC(0)
        for k in range(K):
            v = work[wb + k] + W[b2 + k]
            work[wb + k] = v
            nrm += v * v
        scale = math.sqrt(K) / (math.sqrt(nrm) + gate_eps)
        mx = work[wb] * scale
        for k in range(K):
            v = work[wb + k] * scale
            work[wb + k] = v
            if v > mx:
                mx = v
        tot = ACC(0)
        for k in range(K):
            e = math.exp(work[wb + k] - mx)
            work[wb + k] = e
            tot += e
        inv = 1.0 / tot
        for k in range(K):
            work[wb + k] *= inv


@njit(inline="always")
def _conv_to_V(Ks, t, work, lay, c0, w, b0, nb):
    """Row k of the block's product at work[c0] (rows of w = nb d) to V[(k+1) d:] of stream b0 + b'
    for k < K_b, × α_k if gated (the scaling fused into that copy: no second pass over V)."""
    wl, d = lay[WL], lay[D_MODEL]
    sV, ss, gated = lay[W_V], lay[W_S], lay[GATED] != 0
    for bi in range(nb):
        wb = (b0 + bi) * wl
        for k in range(Ks[t, b0 + bi]):
            src = work[c0 + k * w + bi * d:c0 + k * w + (bi + 1) * d]
            dst = work[wb + sV + (k + 1) * d:wb + sV + (k + 2) * d]
            if gated:
                a = work[wb + ss + k]
                for j in range(d):
                    dst[j] = src[j] * a
            else:
                for j in range(d):
                    dst[j] = src[j]


# (_conv_to_V, mix, ring_write, gate and mlp keep their own bodies, not calls of the range versions
# below: the single-thread kernel's code stays as it was, and its cold compile cheaper. Measured on
# 2026-11-30, float64 engine, empty cache: 8.3-8.4 s CPU as written, 8.8-8.9 s with the single-thread
# ops as inlined calls of the range versions, 9.9-10.1 s with them as plain (non-inlined) calls)
@njit(inline="always")
def _conv_rows_to_V(Ks, t, work, lay, c0, w, b0, nb, k0, k1):
    """_conv_to_V for the rows k0 <= k < min(k1, K_b) only (one task's filter channels, threads > 1)."""
    wl, d = lay[WL], lay[D_MODEL]
    sV, ss, gated = lay[W_V], lay[W_S], lay[GATED] != 0
    for bi in range(nb):
        wb = (b0 + bi) * wl
        for k in range(k0, min(k1, Ks[t, b0 + bi])):
            src = work[c0 + k * w + bi * d:c0 + k * w + (bi + 1) * d]
            dst = work[wb + sV + (k + 1) * d:wb + sV + (k + 2) * d]
            if gated:
                a = work[wb + ss + k]
                for j in range(d):
                    dst[j] = src[j] * a
            else:
                for j in range(d):
                    dst[j] = src[j]


@njit(inline="always")
def convolve(Ks, t, W, off, lay, state, work, B, l, p, Kt):
    """c_k = Σ_τ φ_k(τ) u(t-τ) for k < K_t of a block of streams at once: one GEMM per history block,
    the (K_t × L) reversed filters · the (L × n_b d) window of the block's streams (rows p+1 … p+L),
    by BLAS (numba's np.dot: SciPy's sgemm / dgemm on one thread) into the batch scratch Cb; then
    row k of stream b goes to its V[(k+1) d:] for k < K_b, × α_k if gated (_conv_to_V). The filters
    are read once per block for all its streams (docs/PERFORMANCE.md)."""
    L, d, cb = lay[L_WIN], lay[D_MODEL], lay[WB_C]
    phir = seg(off, O_PHIR, l)
    for i in range((B + lay[HIST_BLK] - 1) // lay[HIST_BLK]):
        o, w, b0, nb = _hist_block(lay, B, l, i)
        c0 = cb + Kt * b0 * d
        w0 = o + (p + 1) * w
        np.dot(W[phir:phir + Kt * L].reshape((Kt, L)), state[w0:w0 + L * w].reshape((L, w)),
               work[c0:c0 + Kt * w].reshape((Kt, w)))
        _conv_to_V(Ks, t, work, lay, c0, w, b0, nb)


@njit(inline="always")
def _use_tile(Kt, small, L, w, W):
    """Does a product of Kt filter rows over an (L × w) window run the register tile (not BLAS)? Up to
    `small` rows (lay[CONV_SMALL], numba_config.conv_small_rows), for a window at least as wide as the
    narrow tile (simd.min_cols of the engine's dtype); one row only for a window of at most
    simd.TILE_GEMV_MAX values (a long window's GEMV streams from L3, where sgemv reads it faster)."""
    return Kt <= small and w >= min_cols(W) and (Kt > 1 or L * w <= TILE_GEMV_MAX)


@njit(inline="always")
def _mix_region(W, off, lay, l, Kt):
    """The bytes mix / mix_h read of layer l's Mcat at budget Kt, as (p0, prow, pn, pld): pn rows of
    prow bytes from byte p0 of W's data, pld bytes apart (simd.conv_product_pf prefetches them during
    the convolution). Input-major Mcat (lay[GEMV1] or lay[GEMM_T]): one run of (Kt + 1) d rows of d
    values; else d rows of the active prefix of (Kt + 1) d values, ldM apart. The float16 copy where mix_h reads it
    (lay[MIX16], one thread: kernel_for's h modes): half the bytes, at its own segment."""
    d, isz = lay[D_MODEL], W.itemsize
    ldM, n = (lay[K_MAX] + 1) * d, (Kt + 1) * d
    if lay[MIX16] != 0 and lay[THREADS] <= 1:
        p0, esz = seg(off, O_MCATH, l) * isz, 2
    else:
        p0, esz = seg(off, O_MCAT, l) * isz, isz
    if lay[GEMV1] != 0 or lay[GEMM_T] != 0:
        return p0, n * d * esz, 1, 0
    return p0, n * esz, d, ldM * esz


PF_STEP_MIN, PF_LAYER_MAX = prefetch_bytes()
PF_WIN_MIN = window_prefetch_min()


@njit(inline="always")
def _prefetch_pays(lay, B, prow, pn):
    """Does prefetching a layer's mixing weights (pn rows of prow bytes) during its convolution pay?
    Measured (docs/PERFORMANCE.md "Prefetching the mixing weights"), it does only where
      * all layers' together do not stay in L2 from one step to the next (>= PF_STEP_MIN) and one
        layer's are not much more than the L2 (<= 2 PF_LAYER_MAX; convolve_small prefetches at most
        PF_LAYER_MAX bytes of them, the lines that last until the mixing reads them):
        numba_config.prefetch_bytes (edge K=32 yes; edge K=4 and the paper config no);
      * the step's window is one history block (B = 1 for d >= 64): a batch's blocks stream their
        windows through L2 between the prefetch and the mixing (edge B=32 was 6-8 % slower with it);
      * the mixing reads float32 weights: Mcat's float16 copy (lay[MIX16]) is read at L2 speed
        either way, and the fp16 program's edge step was 5-7 % slower with the prefetch."""
    nbytes = pn * prow
    return (nbytes * lay[N_LAYERS] >= PF_STEP_MIN and nbytes <= 2 * PF_LAYER_MAX and B <= lay[HIST_BLK]
            and lay[MIX16] == 0)


@njit(inline="always")
def _prefetch_region(W, off, lay, B, l, Kt):
    """_mix_region where _prefetch_pays (else pn = 0: nothing), trimmed to its first PF_LAYER_MAX
    bytes (an L2 smaller than the layer's weights: the mixing's first reads)."""
    p0, prow, pn, pld = _mix_region(W, off, lay, l, Kt)
    if not _prefetch_pays(lay, B, prow, pn):
        pn = 0
    elif pn * prow > PF_LAYER_MAX:
        if pn == 1:
            prow = PF_LAYER_MAX
        else:
            pn = max(1, PF_LAYER_MAX // prow)
    return p0, prow, pn, pld


@njit(inline="always")
def convolve_small(Ks, t, W, off, lay, state, work, B, l, p, Kt):
    """convolve_small_pf with the window prefetch's rule of this machine (PF_WIN_MIN)."""
    convolve_small_pf(Ks, t, W, off, lay, state, work, B, l, p, Kt, PF_WIN_MIN)


@njit(inline="always")
def convolve_small_pf(Ks, t, W, off, lay, state, work, B, l, p, Kt, win_min):
    """convolve, with products of up to lay[CONV_SMALL] filter rows by the register-tiled product
    simd.conv_product_pf (_use_tile). A block of one stream whose budget is the frame's K_t (every B = 1
    step) has its product stored straight into V[d:], × α_k (the tile's scaled store): no C in the
    batch scratch and no _conv_to_V pass. The first block's product prefetches the layer's mixing
    weights that mix reads next (_mix_region: the core fetches them while it computes, instead of
    computing and then waiting on them; docs/PERFORMANCE.md "Prefetching the mixing weights"). With
    several history blocks whose windows (all layers', all streams') are at least win_min bytes, each
    block's product prefetches the next block's window instead (numba_config.window_prefetch_min: they
    come from L3 every step; a prefetch changes no value)."""
    L, d, cb = lay[L_WIN], lay[D_MODEL], lay[WB_C]
    wl, sV, ss, gated = lay[WL], lay[W_V], lay[W_S], lay[GATED] != 0
    phir = seg(off, O_PHIR, l)
    p0, prow, pn, pld = _prefetch_region(W, off, lay, B, l, Kt)
    nblk = (B + lay[HIST_BLK] - 1) // lay[HIST_BLK]
    # several blocks whose windows do not stay in L2 between steps: each product prefetches the next
    # block's window (bytes from W's data: the tile's prefetch addresses are relative to it), where that
    # is at most a line a step of τ (a window row's bytes <= a line per row tile: edge K_t >= 13 on the
    # 4-row tile). With fewer rows the product is bound by the window's fetch itself (edge K=4: 32 KB for
    # 128 steps) and the prefetches cost load slots only (edge B=32 K=4: 2-4 % slower convolution)
    win_pf = (nblk > 1 and lay[N_LAYERS] * B * L * d * state.itemsize >= win_min
              and lay[HIST_BLK] * d * state.itemsize <= LINE * row_tiles(Kt))
    sw = np.int64(state.ctypes.data) - np.int64(W.ctypes.data) if win_pf else np.int64(0)
    for i in range(nblk):
        o, w, b0, nb = _hist_block(lay, B, l, i)
        c0 = cb + Kt * b0 * d
        w0 = o + (p + 1) * w
        if win_pf and i + 1 < nblk:
            o1, w1, _, _ = _hist_block(lay, B, l, i + 1)
            p0, prow, pn, pld = sw + (o1 + (p + 1) * w1) * state.itemsize, L * w1 * state.itemsize, 1, np.int64(0)
        if _use_tile(Kt, lay[CONV_SMALL], L, w, W):
            direct = nb == 1 and Ks[t, b0] == Kt     # V row k + 1 is C row k (stride d = w)
            wb = b0 * wl
            # (one call site, no literal argument: one compiled signature of conv_product_pf)
            conv_product_pf(W, phir, L, state, w0, w, work, wb + sV + d if direct else c0, w, work,
                            wb + ss if direct and gated else -1, Kt, p0, prow, pn, pld)
            pn = 0                                   # (the region once, with the first product)
            if direct:
                continue
        else:
            np.dot(W[phir:phir + Kt * L].reshape((Kt, L)), state[w0:w0 + L * w].reshape((L, w)),
                   work[c0:c0 + Kt * w].reshape((Kt, w)))
        _conv_to_V(Ks, t, work, lay, c0, w, b0, nb)


@njit(inline="always")
def mix(Ks, t, W, off, lay, work, B, l):
    """h += [D | σ^{1/4} M_1 … M_K] V, four streams at a time (V zero-padded to the group's max K).
    One stream on a float32 engine (lay[GEMV1]: Mcat packed input-major): gemv_t, the outputs in
    registers over the active prefix of Mcat's rows."""
    wl, d = lay[WL], lay[D_MODEL]
    sV = lay[W_V]
    ldM = (lay[K_MAX] + 1) * d
    b0 = 0
    if lay[GEMV1] != 0:
        gemv_t(work, sV, W, seg(off, O_MCAT, l), d, (Ks[t, 0] + 1) * d, d, work, lay[W_H])
        b0 = B
    while b0 < B:
        nb = min(4, B - b0)
        kg = 1
        for b in range(b0, b0 + nb):
            if Ks[t, b] > kg:
                kg = Ks[t, b]
        for b in range(b0, b0 + nb):
            wb = b * wl
            for m in range((Ks[t, b] + 1) * d, (kg + 1) * d):
                work[wb + sV + m] = 0.0
        gemm_nt(work, b0 * wl + sV, wl, W, seg(off, O_MCAT, l), ldM, (kg + 1) * d,
                work, b0 * wl + lay[W_H], wl, nb, d, wl >= 0)
        b0 += nb


@njit(inline="always")
def mix_tiled(Ks, t, W, off, lay, work, B, l):
    """mix, with several streams (lay[GEMM_T]: Mcat input-major) as one register-tiled product of every
    stream's V (zero-padded to the frame's max K) by Mcat's active rows (simd.tile_product, the
    convolution's kernel: Mcat's blocks read from L1 by all row tiles). MODE_FIR_SMALL's mixing."""
    mix_tiled_pf(Ks, t, W, off, lay, work, B, l, PF_STEP_MIN)


@njit(inline="always")
def mix_tiled_pf(Ks, t, W, off, lay, work, B, l, mix_min):
    """mix_tiled; where all layers' active Mcat rows are at least mix_min bytes (they do not stay in L2
    from one step to the next: PF_STEP_MIN, half the L2, numba_config.prefetch_bytes), the product
    prefetches Mcat's rows one block of τ (simd.TAU_BLOCK rows) ahead of those its tiles read, spread
    over its steps (a prefetch changes no value)."""
    if lay[GEMM_T] == 0:
        mix(Ks, t, W, off, lay, work, B, l)
        return
    wl, d = lay[WL], lay[D_MODEL]
    n = _pad_V(Ks, t, lay, work, B)
    m0 = seg(off, O_MCAT, l)
    isz = W.itemsize
    pn = 1 if n > TAU_BLOCK and n * d * isz * lay[N_LAYERS] >= mix_min else 0
    # rows [TAU_BLOCK, n + TAU_BLOCK): a block ahead all the way (the last block's lines past the end: a
    # prefetch never faults); in bytes from the data of work (the product's F: V's rows)
    wm = np.int64(W.ctypes.data) - np.int64(work.ctypes.data) if pn else np.int64(0)
    tile_product_pf(work, lay[W_V], wl, W, m0, d, work, lay[W_H], wl, work, np.int64(-1), B, n, d, np.int64(1),
                    wm + (m0 + TAU_BLOCK * d) * isz, n * d * isz, pn, np.int64(0))


@njit(inline="always")
def _pad_V(Ks, t, lay, work, B):
    """Every stream's V zero-padded to the frame's largest K (one product for all streams): the
    product's length (max K + 1) d."""
    wl, d, sV = lay[WL], lay[D_MODEL], lay[W_V]
    kg = 1
    for b in range(B):
        kg = max(kg, Ks[t, b])
    for b in range(B):
        work[b * wl + sV + (Ks[t, b] + 1) * d:b * wl + sV + (kg + 1) * d] = 0.0
    return (kg + 1) * d


@njit(inline="always")
def mix_h_tiled(Ks, t, W, off, lay, work, B, l):
    """mix_tiled from Mcat's float16 copy (Mcat.h input-major where lay[GEMM_T]; the tile widens
    it as loaded). MODE_FIR_SMALL_H's and _HM's mixing."""
    if lay[GEMM_T] == 0:
        mix_h(Ks, t, W, off, lay, work, B, l)
        return
    wl, d = lay[WL], lay[D_MODEL]
    tile_product(work, lay[W_V], wl, W.view(np.uint16), 2 * seg(off, O_MCATH, l), d, work, lay[W_H], wl, work,
                 np.int64(-1), B, _pad_V(Ks, t, lay, work, B), d, np.int64(1))


@njit(inline="always")
def mix_h(Ks, t, W, off, lay, work, B, l):
    """mix with Mcat read from its float16 copy (segment Mcat.h: the same values, half the bytes)."""
    wl, d = lay[WL], lay[D_MODEL]
    sV = lay[W_V]
    ldM = (lay[K_MAX] + 1) * d
    H = W.view(np.uint16)
    b0 = 0
    if lay[GEMV1] != 0:      # one stream: Mcat.h input-major, gemv_t (as mix)
        gemv_t(work, sV, H, 2 * seg(off, O_MCATH, l), d, (Ks[t, 0] + 1) * d, d, work, lay[W_H])
        b0 = B
    while b0 < B:
        nb = min(4, B - b0)
        kg = 1
        for b in range(b0, b0 + nb):
            if Ks[t, b] > kg:
                kg = Ks[t, b]
        for b in range(b0, b0 + nb):
            wb = b * wl
            for m in range((Ks[t, b] + 1) * d, (kg + 1) * d):
                work[wb + sV + m] = 0.0
        gemm_nt_h(work, b0 * wl + sV, wl, H, 2 * seg(off, O_MCATH, l), ldM, (kg + 1) * d,
                  work, b0 * wl + lay[W_H], wl, nb, d)
        b0 += nb


@njit(inline="always")
def _mix_streams(Ks, t, W, off, lay, work, b_lo, b_hi, l):
    """mix for the streams b_lo <= b < b_hi (one task's streams, threads > 1)."""
    wl, d = lay[WL], lay[D_MODEL]
    sV = lay[W_V]
    ldM = (lay[K_MAX] + 1) * d
    b0 = b_lo
    while b0 < b_hi:
        nb = min(4, b_hi - b0)
        kg = 1
        for b in range(b0, b0 + nb):
            if Ks[t, b] > kg:
                kg = Ks[t, b]
        for b in range(b0, b0 + nb):
            wb = b * wl
            for m in range((Ks[t, b] + 1) * d, (kg + 1) * d):
                work[wb + sV + m] = 0.0
        gemm_nt(work, b0 * wl + sV, wl, W, seg(off, O_MCAT, l), ldM, (kg + 1) * d,
                work, b0 * wl + lay[W_H], wl, nb, d, wl >= 0)
        b0 += nb


@njit(inline="always")
def _split_streams(lay, B, Kt):
    """Does a threads=N frame split by streams, the whole layer per task (B >= 4 N and enough work)?"""
    return B >= 4 * lay[THREADS] and B * Kt * lay[D_MODEL] * (lay[L_WIN] + lay[D_MODEL]) >= lay[PAR_MIN_B]


@njit(inline="always")
def _ring_write_blocks(state, work, lay, B, l, p, i0, i1):
    """ring_write for the history blocks i0 <= i < i1 only (one task's streams)."""
    wl, d, L = lay[WL], lay[D_MODEL], lay[L_WIN]
    su, sv, sundo = lay[W_U], lay[W_V], lay[W_UNDO]
    for i in range(i0, i1):
        o, w, b0, nb = _hist_block(lay, B, l, i)
        r0 = o + p * w
        r1 = r0 + L * w
        for bi in range(nb):
            wb = (b0 + bi) * wl
            u = work[wb + su:wb + su + d]
            v = work[wb + sv:wb + sv + d]
            undo = work[wb + sundo + l * d:wb + sundo + (l + 1) * d]
            h0 = state[r0 + bi * d:r0 + (bi + 1) * d]
            h1 = state[r1 + bi * d:r1 + (bi + 1) * d]
            for j in range(d):
                x = u[j]
                undo[j] = h0[j]
                h0[j] = x
                h1[j] = x
                v[j] = x


@njit(inline="always")
def _gate_streams(Ks, t, W, off, lay, work, b_lo, b_hi, l, Kt, gate_eps):
    """gate for the streams b_lo <= b < b_hi only (one task's streams)."""
    wl, d, dg = lay[WL], lay[D_MODEL], lay[D_GATE]
    sg, ss = lay[W_G], lay[W_S]
    nb, o = b_hi - b_lo, b_lo * wl
    gemm_nt(work, o + lay[W_U], wl, W, seg(off, O_W1, l), d, d, work, o + sg, wl, nb, dg, wl < 0)
    b1 = seg(off, O_B1, l)
    for b in range(b_lo, b_hi):
        _bias_gelu(work, b * wl + sg, W, b1, dg)
    gemm_nt(work, o + sg, wl, W, seg(off, O_W2, l), dg, dg, work, o + ss, wl, nb, Kt, wl < 0)
    b2 = seg(off, O_B2, l)
    for b in range(b_lo, b_hi):
        wb = b * wl + ss
        K = Ks[t, b]
        nrm = ACC(0)
        for k in range(K):
            v = work[wb + k] + W[b2 + k]
            work[wb + k] = v
            nrm += v * v
        scale = math.sqrt(K) / (math.sqrt(nrm) + gate_eps)
        mx = work[wb] * scale
        for k in range(K):
            v = work[wb + k] * scale
            work[wb + k] = v
            if v > mx:
                mx = v
        tot = ACC(0)
        for k in range(K):
            e = math.exp(work[wb + k] - mx)
            work[wb + k] = e
            tot += e
        inv = 1.0 / tot
        for k in range(K):
            work[wb + k] *= inv


@njit(inline="always")
def _mlp_streams(W, off, lay, work, b_lo, b_hi, l, ln_eps):
    """mlp for the streams b_lo <= b < b_hi only (one task's streams)."""
    wl, d, dh = lay[WL], lay[D_MODEL], lay[D_HIDDEN]
    sh, sz, sa = lay[W_H], lay[W_Z], lay[W_A]
    nb, o = b_hi - b_lo, b_lo * wl
    _layer_norm_streams(work, nb, wl, o + sh, o + sz, W, seg(off, O_LN2G, l), seg(off, O_LN2B, l), d, ln_eps)
    gemm_nt(work, o + sz, wl, W, seg(off, O_FC1W, l), d, d, work, o + sa, wl, nb, dh, wl < 0)
    fc1b, fc2b = seg(off, O_FC1B, l), seg(off, O_FC2B, l)
    for b in range(b_lo, b_hi):
        wb = b * wl
        _bias_gelu(work, wb + sa, W, fc1b, dh)
        for i in range(d):
            work[wb + sh + i] += W[fc2b + i]
    gemm_nt(work, o + sa, wl, W, seg(off, O_FC2W, l), dh, dh, work, o + sh, wl, nb, d, wl >= 0)


@njit(inline="always")
def _product(W, f0, L, state, w0, w, work, c0, kc, small):
    """C (kc × w) = F (kc × L) · X (L × w) (convolve's product): the register tile where _use_tile says
    so, else BLAS (numba's np.dot)."""
    if _use_tile(kc, small, L, w, W):
        z = np.int64(0)   # (no prefetch region; not literals: the signature convolve_small compiles)
        conv_product_pf(W, f0, L, state, w0, w, work, c0, w, work, np.int64(-1), kc, z, z, z, z)
    else:
        np.dot(W[f0:f0 + kc * L].reshape((kc, L)), state[w0:w0 + L * w].reshape((L, w)),
               work[c0:c0 + kc * w].reshape((kc, w)))


@njit
def _conv_mix_task(Ks, t, W, off, lay, state, work, B, l, p, Kt, c):
    """Task c of conv_mix_par (a compiled function of its own: numba caches it on disk, and the
    parallel loop around it stays small)."""
    n = lay[THREADS]
    L, d, cb, wl = lay[L_WIN], lay[D_MODEL], lay[WB_C], lay[WL]
    phir = seg(off, O_PHIR, l)
    small, hb = lay[CONV_SMALL], lay[HIST_BLK]
    nblk = (B + hb - 1) // hb
    if B < 4 * n:      # few streams: split the filter channels
        k0 = c * Kt // n
        k1 = (c + 1) * Kt // n
        if k1 > k0:
            for i in range(nblk):
                o, w, b0, nb = _hist_block(lay, B, l, i)
                c0 = cb + Kt * b0 * d
                _product(W, phir + k0 * L, L, state, o + (p + 1) * w, w, work, c0 + k0 * w, k1 - k0, small)
                _conv_rows_to_V(Ks, t, work, lay, c0, w, b0, nb, k0, k1)
        mcat = seg(off, O_MCAT, l)
        ldM = (lay[K_MAX] + 1) * d
        sV = lay[W_V]
        hp = lay[WB_HP] + c * B * d
        m0 = 0 if c == 0 else (k0 + 1) * d     # this task's columns of V and Mcat (task 0: D's too)
        m1 = (k1 + 1) * d
        b0 = 0
        while b0 < B:                          # four streams at a time, as mix
            nb = min(4, B - b0)
            kg = 1
            for b in range(b0, b0 + nb):
                if Ks[t, b] > kg:
                    kg = Ks[t, b]
            e1 = min(m1, (kg + 1) * d)
            for b in range(b0, b0 + nb):       # V zero-padded to the group's max K (this task's part)
                wb = b * wl + sV
                for m in range(max(m0, (Ks[t, b] + 1) * d), e1):
                    work[wb + m] = 0.0
            if e1 > m0:
                gemm_nt(work, b0 * wl + sV + m0, wl, W, mcat + m0, ldM, e1 - m0, work, hp + b0 * d, d, nb, d, wl < 0)
            else:
                work[hp + b0 * d:hp + (b0 + nb) * d] = 0.0
            b0 += nb
    else:              # many streams: split the streams (history blocks), the whole layer per task
        i0 = c * nblk // n
        i1 = (c + 1) * nblk // n
        b_lo, b_hi = i0 * hb, min(i1 * hb, B)
        if b_hi > b_lo:
            ln_eps, gate_eps = W[seg(off, O_EPS, 0)], W[seg(off, O_EPS, 0) + 1]
            _ring_write_blocks(state, work, lay, B, l, p, i0, i1)
            if lay[GATED] != 0:
                _gate_streams(Ks, t, W, off, lay, work, b_lo, b_hi, l, Kt, gate_eps)
            for i in range(i0, i1):
                o, w, b0, nb = _hist_block(lay, B, l, i)
                c0 = cb + Kt * b0 * d
                _product(W, phir, L, state, o + (p + 1) * w, w, work, c0, Kt, small)
                _conv_to_V(Ks, t, work, lay, c0, w, b0, nb)
            _mix_streams(Ks, t, W, off, lay, work, b_lo, b_hi, l)
            if lay[MLP] != 0:
                _mlp_streams(W, off, lay, work, b_lo, b_hi, l, ln_eps)


@njit(parallel=True)
def conv_mix_par(Ks, t, W, off, lay, state, work, B, l, p, Kt):
    """convolve + mix of layer l split into n = lay[THREADS] tasks on numba's thread pool (one
    fork and join per layer; the gate, LayerNorms, MLP and head stay on the calling thread).

    B >= 4 n (and enough work, _split_streams): task c takes the history blocks c nblk / n …
    (c+1) nblk / n (whole streams) through the whole layer: their ring rows, gate, products, mixing
    and MLP, writing only their own rows of the history, Cb and their streams' scratch (the step
    loop then skips the MLP).
    B < 4 n (too few streams for the mixing's groups of four): task c takes the filter channels
    k0 = c K_t / n … k1 = (c+1) K_t / n of every stream: those rows of the products (the windows
    read by every task, from cache) and those blocks of columns of V and Mcat (task 0 also D's), so
    each task streams its own part of the weights; its part of the mixing goes to
    work[WB_HP + c B d] and the parts are summed into h after the join (float sums in another
    order than one thread's: equal to the float64 reference within the same tolerance)."""
    n = lay[THREADS]
    # (numba.set_num_threads here would keep the function out of the disk cache: a ctypes pointer)
    for c in prange(n):
        _conv_mix_task(Ks, t, W, off, lay, state, work, B, l, p, Kt, c)
    if B < 4 * n:
        d, wl, hp = lay[D_MODEL], lay[WL], lay[WB_HP]
        for b in range(B):
            h = work[b * wl + lay[W_H]:b * wl + lay[W_H] + d]
            for c in range(n):
                part = work[hp + (c * B + b) * d:hp + (c * B + b + 1) * d]
                for j in range(d):
                    h[j] += part[j]


@njit(inline="always")
def _mlp_gemv(W, off, lay, work, l):
    """h += fc2 GELU(fc1 z + b1) + b2 of one stream (z = LN2(h) already in work[W_Z]), fc1.W / fc2.W
    input-major, fc1.W in column blocks of GEMV_BLOCK outputs (layout.to_blocks: each block's rows back
    to back, one contiguous read per chunk of outputs)."""
    d, dh = lay[D_MODEL], lay[D_HIDDEN]
    sh, sz, sa = lay[W_H], lay[W_Z], lay[W_A]
    fc2b = seg(off, O_FC2B, l)
    z = work[sa:sa + dh]   # (a view: see above _input_gemv)
    for i in range(dh):
        z[i] = 0.0
    fc1 = seg(off, O_FC1W, l)
    for c in range(0, dh, GEMV_BLOCK):                                   # a = fc1 z, block by block
        w = min(GEMV_BLOCK, dh - c)
        gemv_t(work, sz, W, fc1 + c * d, w, d, w, work, sa + c)
    _bias_gelu(work, sa, W, seg(off, O_FC1B, l), dh)
    h, b2 = work[sh:sh + d], W[fc2b:fc2b + d]
    for i in range(d):                                                   # (views: the note above _input_gemv)
        h[i] += b2[i]
    gemv_t(work, sa, W, seg(off, O_FC2W, l), d, dh, d, work, sh)     # h += fc2 a


@njit(inline="always")
def mlp_one(W, off, lay, work, l, ln_eps):
    """mlp of stream_run_fir_one (one stream, GEMV only)."""
    _layer_norm(work, lay[W_H], W, seg(off, O_LN2G, l), W, seg(off, O_LN2B, l), lay[D_MODEL], ln_eps,
                work, lay[W_Z])
    _mlp_gemv(W, off, lay, work, l)


@njit(inline="always")
def mlp(W, off, lay, work, B, l, ln_eps):
    """h += fc2 GELU(fc1 LN2(h) + b1) + b2."""
    wl, d, dh = lay[WL], lay[D_MODEL], lay[D_HIDDEN]
    sh, sz, sa = lay[W_H], lay[W_Z], lay[W_A]
    _layer_norm_streams(work, B, wl, sh, sz, W, seg(off, O_LN2G, l), seg(off, O_LN2B, l), d, ln_eps)
    fc1b, fc2b = seg(off, O_FC1B, l), seg(off, O_FC2B, l)
    if lay[GEMV1] != 0:   # one stream, float32 engine: fc1.W / fc2.W packed input-major, gemv_t
        _mlp_gemv(W, off, lay, work, l)
    else:
        gemm_nt(work, sz, wl, W, seg(off, O_FC1W, l), d, d, work, sa, wl, B, dh, wl < 0)
        for b in range(B):
            wb = b * wl
            _bias_gelu(work, wb + sa, W, fc1b, dh)   # + fc1.b in GELU's pass
            for i in range(d):
                work[wb + sh + i] += W[fc2b + i]
        gemm_nt(work, sa, wl, W, seg(off, O_FC2W, l), dh, dh, work, sh, wl, B, d, wl >= 0)


@njit(inline="always")
def mlp_tiled(W, off, lay, work, B, l):
    """mlp, with several streams' fc1 and fc2 as register-tiled products (simd.tile_product) of all
    the streams' rows by the input-major fc1.W / fc2.W where lay[GEMM_T]; called by the mixer of
    MODE_FIR_SMALL / _SMALL_H (as mlp_h by the fp16-MLP modes': the modes without the convolution's
    tile compile none, and _run no mode test of its own)."""
    if lay[MLP] == 0:
        return
    ln_eps = W[seg(off, O_EPS, 0)]
    if lay[GEMM_T] == 0:
        mlp(W, off, lay, work, B, l, ln_eps)
    else:
        _mlp_streams_tiled(W, off, lay, work, B, l, ln_eps, W, seg(off, O_FC1W, l), seg(off, O_FC2W, l))


@njit(inline="always")
def _mlp_streams_tiled(W, off, lay, work, B, l, ln_eps, X, x1, x2):
    """h += fc2 GELU(fc1 LN2(h) + b1) + b2 for all B streams as two register-tiled products, fc1 / fc2
    input-major at X[x1] / X[x2]: W's float32 segments, or its uint16 view at their half copies."""
    wl, d, dh = lay[WL], lay[D_MODEL], lay[D_HIDDEN]
    sh, sz, sa = lay[W_H], lay[W_Z], lay[W_A]
    _layer_norm_streams(work, B, wl, sh, sz, W, seg(off, O_LN2G, l), seg(off, O_LN2B, l), d, ln_eps)
    fc1b, fc2b = seg(off, O_FC1B, l), seg(off, O_FC2B, l)
    tile_product(work, sz, wl, X, x1, dh, work, sa, wl, work, np.int64(-1), B, d, dh, np.int64(0))
    for b in range(B):
        wb = b * wl
        _bias_gelu(work, wb + sa, W, fc1b, dh)
        for i in range(d):
            work[wb + sh + i] += W[fc2b + i]
    tile_product(work, sa, wl, X, x2, d, work, sh, wl, work, np.int64(-1), B, dh, d, np.int64(1))


@njit(inline="always")
def mlp_h(W, off, lay, work, B, l):
    """mlp with fc1 and fc2 read from their transposed float16 copies (segments fc1.W.h / fc2.W.h) in
    the axpy form (gemv.gemv_t: the outputs held in registers; before it _axpy_h, which loaded and stored
    them every four rows), one stream at a time: the MLP of MODE_FIR_HM / _SMALL_HM (lay[MLP16]),
    called at the end of their mixer. (Every B: at B = 32 a stream's half weights come from L1/L2
    as fast as mlp's 4 × 4 tiles share float32 ones between four streams; docs/PERFORMANCE.md.)"""
    if lay[MLP] == 0:
        return
    ln_eps = W[seg(off, O_EPS, 0)]
    wl, d, dh = lay[WL], lay[D_MODEL], lay[D_HIDDEN]
    sh, sz, sa = lay[W_H], lay[W_Z], lay[W_A]
    _layer_norm_streams(work, B, wl, sh, sz, W, seg(off, O_LN2G, l), seg(off, O_LN2B, l), d, ln_eps)
    H = W.view(np.uint16)
    f1, f2 = 2 * seg(off, O_FC1H, l), 2 * seg(off, O_FC2H, l)
    fc1b, fc2b = seg(off, O_FC1B, l), seg(off, O_FC2B, l)
    for b in range(B):
        wb = b * wl
        work[wb + sa:wb + sa + dh] = 0.0
        gemv_t(work, wb + sz, H, f1, dh, d, dh, work, wb + sa)    # a = fc1 z (outputs in registers)
        _bias_gelu(work, wb + sa, W, fc1b, dh)                    # + fc1.b in GELU's pass
        for i in range(d):
            work[wb + sh + i] += W[fc2b + i]
        gemv_t(work, wb + sa, H, f2, d, dh, d, work, wb + sh)     # h += fc2 a


@njit(inline="always")
def mlp_h_tiled(W, off, lay, work, B, l):
    """mlp_h, with several streams (lay[GEMM_T]) as two register-tiled products of all the streams'
    rows by the transposed float16 copies (simd.tile_product, widened as loaded). MODE_FIR_SMALL_HM's."""
    if lay[GEMM_T] == 0 or lay[MLP] == 0:
        mlp_h(W, off, lay, work, B, l)
    else:
        _mlp_streams_tiled(W, off, lay, work, B, l, W[seg(off, O_EPS, 0)], W.view(np.uint16),
                           2 * seg(off, O_FC1H, l), 2 * seg(off, O_FC2H, l))


@njit(inline="always")
def head(t, W, off, lay, state, ist, work, Y, B, ln_eps):
    """y = W_out LN_f(h) + b_out; with head='mean', the causal mean over the last min(t, W) outputs."""
    wl, d, d_out = lay[WL], lay[D_MODEL], lay[D_OUT]
    so = lay[W_O]
    _layer_norm_streams(work, B, wl, lay[W_H], lay[W_Z], W, seg(off, O_LNFG, 0), seg(off, O_LNFB, 0), d, ln_eps)
    if lay[GEMV1] != 0:   # one stream, float32: a dot product per output (as the one-stream kernel's)
        _head_gemv(W, off, lay, work)
    else:
        gemm_nt(work, lay[W_Z], wl, W, seg(off, O_OUTW, 0), d, d, work, so, wl, B, d_out, wl < 0)
        _add_bias(work, B, wl, so, W, seg(off, O_OUTB, 0), d_out)
    _head_out(t, lay, state, ist, work, Y, B)


@njit(inline="always")
def _head_gemv(W, off, lay, work):
    """o = W_out z + b_out of one stream (z = LN_f(h) in work[W_Z]): a dot product per output over
    out.W's rows (row-major). d_out is a handful of outputs, less than one vector, where gemv_t's
    outputs-in-registers form runs scalar: 0.6 µs a step instead of 0.2 (fp16 edge K=4, profile_ops)."""
    d, d_out, so = lay[D_MODEL], lay[D_OUT], lay[W_O]
    bo, ow = seg(off, O_OUTB, 0), seg(off, O_OUTW, 0)
    z = work[lay[W_Z]:lay[W_Z] + d]
    for i in range(d_out):
        wr = W[ow + i * d:ow + (i + 1) * d]
        acc = ACC(0)
        for j in range(d):
            acc += wr[j] * z[j]
        work[so + i] = W[bo + i] + acc


@njit(inline="always")
def head_one(t, W, off, lay, state, ist, work, Y, ln_eps):
    """head of stream_run_fir_one (one stream, GEMV only)."""
    _layer_norm(work, lay[W_H], W, seg(off, O_LNFG, 0), W, seg(off, O_LNFB, 0), lay[D_MODEL], ln_eps,
                work, lay[W_Z])
    _head_gemv(W, off, lay, work)
    _head_out_one(t, lay, state, ist, work, Y)


@njit(inline="always")
def _head_out_one(t, lay, state, ist, work, Y):
    """_head_out of one stream (head_one): the same values in the same order, written for B = 1 and
    with the pool's slots stepped instead of taken modulo PW (Python's modulo of signed integers is a
    sign fix-up per slot): ≈ 500 lines less of LLVM IR in each one-stream kernel, ≈ 0.1 s of its cold
    compile (docs/PERFORMANCE.md "Session 12")."""
    d_out, so = lay[D_OUT], lay[W_O]
    o = work[so:so + d_out]
    if lay[POOLED] != 0:
        PW, pp = lay[POOL_W], ist[IST_POOL]
        n = min(ist[IST_T] + 1, PW)
        pool = state[lay[ST_POOL]:]
        ub = lay[W_UNDO] + lay[N_LAYERS] * lay[D_MODEL]
        for i in range(d_out):
            work[ub + i] = pool[pp * d_out + i]
            pool[pp * d_out + i] = o[i]
        s0 = pp - n + 1   # the oldest slot pooled
        if s0 < 0:
            s0 += PW
        for i in range(d_out):
            acc = ACC(0)
            slot = s0
            for r in range(n):  # oldest first
                acc += pool[slot * d_out + i]
                slot += 1
                if slot == PW:
                    slot = 0
            Y[t, 0, i] = acc / n
    else:
        for i in range(d_out):
            Y[t, 0, i] = o[i]


@njit(inline="always")
def _head_out(t, lay, state, ist, work, Y, B):
    """Y[t] = o, or with head='mean' the causal mean over the last min(t, W) outputs."""
    wl, d, d_out = lay[WL], lay[D_MODEL], lay[D_OUT]
    so = lay[W_O]
    if lay[POOLED] != 0:
        PW = lay[POOL_W]
        pp = ist[IST_POOL]
        steps = ist[IST_T] + 1
        pool = state[lay[ST_POOL]:]
        sundo = lay[W_UNDO] + lay[N_LAYERS] * d
        for b in range(B):
            wb = b * wl
            pb = b * PW * d_out
            ub = wb + sundo
            for i in range(d_out):
                work[ub + i] = pool[pb + pp * d_out + i]
                pool[pb + pp * d_out + i] = work[wb + so + i]
            n = min(steps, PW)
            for i in range(d_out):
                acc = ACC(0)
                for r in range(n):  # oldest first
                    slot = (pp - n + 1 + r + PW) % PW
                    acc += pool[pb + slot * d_out + i]
                Y[t, b, i] = acc / n
    else:
        for b in range(B):
            for i in range(d_out):
                Y[t, b, i] = work[b * wl + so + i]


@njit(fastmath=False)   # fastmath would assume finite values and fold the check away
def rows_finite(a, o, stride, rows, n):
    """Are a[o + r stride + i], r < rows, i < n all finite? (u of every stream, y_t of every stream)."""
    for r in range(rows):
        for i in range(n):
            if not np.isfinite(a[o + r * stride + i]):
                return False
    return True


@njit(inline="always")   # the check itself is rows_finite's (fastmath off); one kernel fewer to compile
def output_finite(Y, t):
    """Is y_t finite for every stream? (rows_finite on the flat view of the C-contiguous Y.)"""
    B, n = Y.shape[1], Y.shape[2]
    return rows_finite(Y.reshape(-1), t * B * n, n, B, n)


def layer_mixer(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    """One layer's sequence mixer, h += mixer(u), for the mode (MODE_FIR / MODE_LDS / MODE_LRU).

    Compiled code never runs this body: the overload below hands numba the mode's own ops for the
    literal `mode` of each entry point, so an exact-FIR engine compiles no LDS or LRU kernels
    (measured: 9.1 → 5.8 s of CPU for the edge engine's first step on an empty cache; numba's
    dead-branch pruning does not remove `if mode == ...` branches inside a loop). This body is the
    same dispatch in Python, for NUMBA_DISABLE_JIT=1."""
    if mode == MODE_LRU:
        _mixer_lru(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode)
    elif mode == MODE_LDS:
        _mixer_lds(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode)
    elif mode == MODE_FIR_SMALL:
        _mixer_fir_small(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode)
    elif mode == MODE_FIR_PAR:
        _mixer_fir_par(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode)
    elif mode == MODE_FIR_H:
        _mixer_fir_h(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode)
    elif mode == MODE_FIR_SMALL_H:
        _mixer_fir_small_h(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode)
    elif mode == MODE_FIR_HM:
        _mixer_fir_hm(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode)
    elif mode == MODE_FIR_SMALL_HM:
        _mixer_fir_small_hm(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode)
    else:
        _mixer_fir(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode)


def _mixer_fir(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    ring_write(state, work, lay, B, l, p)                     # window of u ← u(t)
    if lay[GATED] != 0:
        gate(Ks, t, W, off, lay, work, B, l, Kt, gate_eps)   # α(t) (Eq. 8)
    convolve(Ks, t, W, off, lay, state, work, B, l, p, Kt)   # V = [u, α_k (Φ_k * u)(t)]_{k≤K}
    mix(Ks, t, W, off, lay, work, B, l)                      # h += D u + Σ σ_k^¼ M_k α_k c_k (Eq. 7)


def _mixer_fir_small(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    ring_write(state, work, lay, B, l, p)
    if lay[GATED] != 0:
        gate(Ks, t, W, off, lay, work, B, l, Kt, gate_eps)
    convolve_small(Ks, t, W, off, lay, state, work, B, l, p, Kt)   # (the register tile)
    mix_tiled(Ks, t, W, off, lay, work, B, l)
    mlp_tiled(W, off, lay, work, B, l)                             # (_run skips its own call in this mode)


def _mixer_fir_h(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    ring_write(state, work, lay, B, l, p)
    if lay[GATED] != 0:
        gate(Ks, t, W, off, lay, work, B, l, Kt, gate_eps)
    convolve(Ks, t, W, off, lay, state, work, B, l, p, Kt)
    mix_h(Ks, t, W, off, lay, work, B, l)                    # (Mcat's float16 copy)


def _mixer_fir_hm(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    ring_write(state, work, lay, B, l, p)
    if lay[GATED] != 0:
        gate(Ks, t, W, off, lay, work, B, l, Kt, gate_eps)
    convolve(Ks, t, W, off, lay, state, work, B, l, p, Kt)
    mix_h(Ks, t, W, off, lay, work, B, l)                    # (Mcat's float16 copy)
    mlp_h(W, off, lay, work, B, l)                           # (the layer's MLP from the half copies: _run
                                                             # skips its own call in this mode)


def _mixer_fir_small_hm(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    ring_write(state, work, lay, B, l, p)
    if lay[GATED] != 0:
        gate(Ks, t, W, off, lay, work, B, l, Kt, gate_eps)
    convolve_small(Ks, t, W, off, lay, state, work, B, l, p, Kt)
    mix_h_tiled(Ks, t, W, off, lay, work, B, l)
    mlp_h_tiled(W, off, lay, work, B, l)


def _mixer_fir_small_h(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    ring_write(state, work, lay, B, l, p)
    if lay[GATED] != 0:
        gate(Ks, t, W, off, lay, work, B, l, Kt, gate_eps)
    convolve_small(Ks, t, W, off, lay, state, work, B, l, p, Kt)
    mix_h_tiled(Ks, t, W, off, lay, work, B, l)
    mlp_tiled(W, off, lay, work, B, l)


def _mixer_fir_par(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    if _split_streams(lay, B, Kt):     # the whole layer (MLP too) per task, whole streams each
        conv_mix_par(Ks, t, W, off, lay, state, work, B, l, p, Kt)
        return
    ring_write(state, work, lay, B, l, p)
    if lay[GATED] != 0:
        gate(Ks, t, W, off, lay, work, B, l, Kt, gate_eps)
    if B < 4 * lay[THREADS] and B * Kt * lay[D_MODEL] * (lay[L_WIN] + lay[D_MODEL]) >= lay[PAR_MIN_K]:
        conv_mix_par(Ks, t, W, off, lay, state, work, B, l, p, Kt)   # convolve + mix, channels split
    else:                                                           # too little work to pay for a fork
        if lay[CONV_SMALL] > 1:
            convolve_small(Ks, t, W, off, lay, state, work, B, l, p, Kt)
        else:
            convolve(Ks, t, W, off, lay, state, work, B, l, p, Kt)
        mix(Ks, t, W, off, lay, work, B, l)


def _mixer_lds(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    lds_ring(state, work, lay, B, l, p)                      # u(t-L) out of the ring, u(t) in
    if lay[GATED] != 0:
        gate(Ks, t, W, off, lay, work, B, l, Kt, gate_eps)
    lds_convolve(Ks, t, W, off, lay, state, work, B, l)      # V = [u, α_k ladder_k(t)]
    mix(Ks, t, W, off, lay, work, B, l)


def _mixer_lru(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    lru_mix(W, off, lay, state, work, B, l)                  # x ← λx + B̃u; h += Re(Cx) + D u


def undo_mixer(state, work, lay, B, p, mode):
    """Put back what a frame wrote into the mixer's state (history rows, ladder or LRU states);
    chosen by the literal mode like layer_mixer."""
    if mode == MODE_LRU:
        _undo_hist(state, work, lay, B, p)
        lru_undo(state, work, lay, B)
    elif mode == MODE_LDS:
        lds_undo(state, work, lay, B, p)                     # ladder states and ring rows back
    else:
        _undo_hist(state, work, lay, B, p)


@njit
def _undo_hist(state, work, lay, B, p):
    """History rows p and p + L of every layer back from work[W_UNDO]."""
    wl, d, L, nl = lay[WL], lay[D_MODEL], lay[L_WIN], lay[N_LAYERS]
    sundo = lay[W_UNDO]
    for l in range(nl):
        for i in range((B + lay[HIST_BLK] - 1) // lay[HIST_BLK]):
            o, w, b0, nb = _hist_block(lay, B, l, i)
            r0 = o + p * w                                   # rows p and p + L of the block
            for bi in range(nb):
                ub = (b0 + bi) * wl + sundo + l * d
                for j in range(d):
                    state[r0 + bi * d + j] = work[ub + j]
                    state[r0 + L * w + bi * d + j] = work[ub + j]


def _literal_mode(mode) -> int:
    if not isinstance(mode, types.IntegerLiteral):
        raise TypingError("the kernels' mode must be a literal int (MODE_FIR / MODE_LDS / MODE_LRU)")
    return mode.literal_value


@overload(layer_mixer)
def _ol_layer_mixer(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode):
    # the mode's mixer is the implementation itself (plain Python, compiled here with its ops
    # inlined once), not a wrapper that inlines it: one copy of its IR fewer (cold start)
    return {MODE_FIR: _mixer_fir, MODE_LDS: _mixer_lds, MODE_LRU: _mixer_lru,
            MODE_FIR_SMALL: _mixer_fir_small, MODE_FIR_PAR: _mixer_fir_par,
            MODE_FIR_H: _mixer_fir_h, MODE_FIR_SMALL_H: _mixer_fir_small_h,
            MODE_FIR_HM: _mixer_fir_hm, MODE_FIR_SMALL_HM: _mixer_fir_small_hm}[_literal_mode(mode)]


@overload(undo_mixer)
def _ol_undo_mixer(state, work, lay, B, p, mode):
    m = _literal_mode(mode)
    if m == MODE_LRU:
        def impl(state, work, lay, B, p, mode):
            _undo_hist(state, work, lay, B, p)
            lru_undo(state, work, lay, B)
    elif m == MODE_LDS:
        def impl(state, work, lay, B, p, mode):
            lds_undo(state, work, lay, B, p)
    else:
        def impl(state, work, lay, B, p, mode):
            _undo_hist(state, work, lay, B, p)
    return impl


@njit(inline="always")
def undo_frame(state, work, lay, ist, B, p, mode):
    """Put back what frame t wrote into the mixer's state and the pool ring (ist has not advanced yet)."""
    wl, d, d_out, nl = lay[WL], lay[D_MODEL], lay[D_OUT], lay[N_LAYERS]
    sundo, sp = lay[W_UNDO], lay[ST_POOL]
    undo_mixer(state, work, lay, B, p, mode)
    if lay[POOLED] != 0:
        PW, pp = lay[POOL_W], ist[IST_POOL]
        for b in range(B):
            ub = b * wl + sundo + nl * d
            for i in range(d_out):
                state[sp + b * PW * d_out + pp * d_out + i] = work[ub + i]


@njit(inline="always")
def advance(lay, ist):
    """The ring, the step count and the pool ring move on by one frame."""
    ist[IST_POS] = (ist[IST_POS] + 1) % lay[L_WIN]
    ist[IST_T] += 1
    if lay[POOLED] != 0:
        ist[IST_POOL] = (ist[IST_POOL] + 1) % lay[POOL_W]


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------

@njit(inline="always")
def _run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, mode):
    """The step loop of every mode. `mode` is a literal constant of each entry point below: numba
    compiles _run once per mode, and `layer_mixer` / `undo_mixer` resolve to that mode's ops only
    (an overload chosen by the literal), so a program compiles its own mode's kernels and no other's."""
    status = check_inputs(X, Ks, lay, ist, nan_zero)
    if status != OK:
        return status
    T, B, _ = X.shape
    ln_eps, gate_eps = W[seg(off, O_EPS, 0)], W[seg(off, O_EPS, 0) + 1]
    d, wl = lay[D_MODEL], lay[WL]
    for t in range(T):
        p = ist[IST_POS]
        Kt = Ks[t, 0]                                            # the largest budget of this frame (not the
                                                                 # literal 1: numba would compile gemm_nt for it)
        for b in range(B):
            Kt = max(Kt, Ks[t, b])
        input_projection(X, t, W, off, lay, work, ist)           # h = W_in x_t + b_in
        finite = True                                            # did this frame overflow? (u and y)
        for l in range(lay[N_LAYERS]):
            _layer_norm_streams(work, B, wl, lay[W_H], lay[W_U], W, seg(off, O_LN1G, l),
                                seg(off, O_LN1B, l), d, ln_eps)  # u = LN1(h)
            finite = rows_finite(work, lay[W_U], wl, B, d) and finite
            layer_mixer(Ks, t, W, off, lay, state, work, B, l, p, Kt, gate_eps, mode)   # h += mixer(u)
            if lay[MLP] != 0 and not (mode == MODE_FIR_PAR and _split_streams(lay, B, Kt)) \
                    and mode != MODE_FIR_HM and mode != MODE_FIR_SMALL_HM \
                    and mode != MODE_FIR_SMALL and mode != MODE_FIR_SMALL_H:
                mlp(W, off, lay, work, B, l, ln_eps)             # h += MLP(LN2(h)) (a split layer or the
                #                     mixer of the tile and fp16-MLP modes (mlp_tiled, mlp_h) did it)
        head(t, W, off, lay, state, ist, work, Y, B, ln_eps)     # y_t = W_out LN_f(h) + b_out (pooled)
        if not (finite and output_finite(Y, t)):                 # overflow: the caller takes it back
            ist[IST_ERR_T] = t
            return ERR_UNDO
        advance(lay, ist)
    return OK


@njit
def stream_run_fir(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    """stream_run for exact (ring-buffer FIR) programs."""
    return _run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, 0)


@njit
def stream_run_fir_small(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    """stream_run for exact programs whose layout runs the convolution's register tile
    (lay[CONV_SMALL] > 1, the default): products of up to CONV_SMALL rows by the register tile (convolve_small)."""
    return _run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, 3)


# the one-stream kernel's convolution and mixing (kept apart from convolve_small / mix: its own ops)
@njit(inline="always")
def mix_one(Ks, t, W, off, lay, work, l):
    """mix of one stream with Mcat input-major (lay[GEMV1]): gemv_t over the active prefix of its rows."""
    d, Kt = lay[D_MODEL], Ks[t, 0]
    if d == GEMV_CHUNK and _streams_mix(W, lay, Kt):   # (one chunk of outputs, Mcat's rows back to back)
        gemv_stream(work, lay[W_V], W, seg(off, O_MCAT, l), d, (Kt + 1) * d, work, lay[W_H], STREAM_AHEAD)
    else:
        gemv_t(work, lay[W_V], W, seg(off, O_MCAT, l), d, (Kt + 1) * d, d, work, lay[W_H])


STREAM_STEP_MIN = stream_step_min()


@njit(inline="always")
def _streams_mix(W, lay, Kt):
    """Does mix_one stream the layer's Mcat through L1 (gemv_t's non-temporal prefetch, STREAM_AHEAD bytes
    ahead) instead of reading it through L2? Where all layers' active Mcat of the step exceed the L2 by a
    quarter (STREAM_STEP_MIN: edge K >= 19 with a 1 MB L2), measured (docs/PERFORMANCE.md "Streaming the
    mixing weights"): then Mcat cannot stay in L2 from one step to the next anyway, and read through it,
    it evicts the step's other weights and windows, which then come from L3 too (edge K = 32 5 % faster
    streamed; K = 8 … 16, which mostly stay in L2, 1-5 % slower). AVX2 targets stream at every budget
    (numba_config.stream_step_min: 0): there the step's other weights then stay in L2 (docs/PERFORMANCE.md
    "Session 12"). All of this on AMD CPUs only: on an Intel Xeon the streamed lines leave the caches and
    come back from DRAM, and the mixing is never streamed (stream_step_min, docs/PERFORMANCE.md "Session 13")."""
    d = lay[D_MODEL]
    return lay[N_LAYERS] * (Kt + 1) * d * d * W.itemsize >= STREAM_STEP_MIN


@njit(inline="always")
def convolve_one(Ks, t, W, off, lay, state, work, l, p, Kt):
    """convolve_small of stream_run_fir_one: one stream, every product the register tile (one_stream_mode
    checked that it always applies), stored straight into V[d:] × α_k, prefetching the layer's mixing
    weights where that pays (_prefetch_region, as convolve_small)."""
    L, d = lay[L_WIN], lay[D_MODEL]
    o, w, b0, nb = _hist_block(lay, 1, l, 0)
    p0, prow, pn, pld = _prefetch_region(W, off, lay, 1, l, Kt)
    conv_product_pf(W, seg(off, O_PHIR, l), L, state, o + (p + 1) * w, w, work, lay[W_V] + d, w, work,
                    lay[W_S] if lay[GATED] != 0 else -1, Kt, p0, prow, pn, pld)


@njit(inline="always")
def mix_one_narrow(Ks, t, W, off, lay, work, l):
    """mix_one of stream_run_fir_one_narrow: gemv_t over the active prefix of Mcat's rows. Its windows
    (simd.SMALL_MAX columns at most) are narrower than a GEMV chunk, so mix_one's streamed branch (d =
    GEMV_CHUNK) is never taken there; left out, the kernel compiles ≈ 0.1 s faster (the same values:
    gemv_stream's are gemv_t's bit for bit)."""
    d, Kt = lay[D_MODEL], Ks[t, 0]
    gemv_t(work, lay[W_V], W, seg(off, O_MCAT, l), d, (Kt + 1) * d, d, work, lay[W_H])


@njit(inline="always")
def _prefetch_region_one(W, off, lay, l, Kt):
    """_prefetch_region of one float32 stream with input-major Mcat (lay[GEMV1], no float16 copy: the
    small kernel's only layout), the same region; without the branches for other layouts, which the
    small kernel compiled and never took (docs/PERFORMANCE.md "Session 12, round 2")."""
    d, isz = lay[D_MODEL], W.itemsize
    prow = (Kt + 1) * d * d * isz
    pn = 1
    if not (prow * lay[N_LAYERS] >= PF_STEP_MIN and prow <= 2 * PF_LAYER_MAX):
        pn = 0
    elif prow > PF_LAYER_MAX:
        prow = PF_LAYER_MAX
    return seg(off, O_MCAT, l) * isz, prow, pn, 0


@njit(inline="always")
def convolve_one_narrow(Ks, t, W, off, lay, state, work, l, p, Kt):
    """convolve_one over a small window (stream_run_fir_one_narrow): simd.small_product_pf, the one of
    conv_product_pf's paths that windows of simd.SMALL_MIN … SMALL_MAX columns take, alone (narrower than
    a tile with AVX-512: narrow_product_pf; one to two tiles with AVX2: pair_product_pf; the same products
    and prefetch, bit for bit), the prefetch region _prefetch_region_one's."""
    L, d = lay[L_WIN], lay[D_MODEL]
    o, w, b0, nb = _hist_block(lay, 1, l, 0)
    p0, prow, pn, pld = _prefetch_region_one(W, off, lay, l, Kt)
    small_product_pf(W, seg(off, O_PHIR, l), L, state, o + (p + 1) * w, w, work, lay[W_V] + d, w, work,
                     lay[W_S] if lay[GATED] != 0 else -1, Kt, p0, prow, pn, pld)


# stream_run_fir_one's packed arguments (the engine's call crosses into numba with 6 arguments, not 10:
# each array argument costs ≈ 40 ns to unbox, and a frame passed straight in saves the np.copyto of it,
# ≈ 0.14 µs: bench/call_overhead.py). F, one float buffer, holds W | state | work; I, one int64 buffer, holds a header of
# N_PACK_HEAD (start, stop) pairs, then off | lay | ist. The engine's W, state, work, off, lay and ist
# are views of the two buffers (StreamEngine, engine.pack_one).
PACK_W, PACK_STATE, PACK_WORK, PACK_OFF, PACK_LAY, PACK_IST = range(6)
N_PACK_HEAD = 12


@njit(inline="always")
def unpack_one(F, I):
    """(W, off, lay, state, ist, work): the views of F and I that the header at I[:N_PACK_HEAD] names."""
    return (F[I[0]:I[1]], I[I[6]:I[7]], I[I[8]:I[9]], F[I[2]:I[3]], I[I[10]:I[11]], F[I[4]:I[5]])


def pack_one(W, off, lay, state, ist, work):
    """(F, I) for stream_run_fir_one: copies of W, state and work in one cache-line aligned float buffer
    (each starting on a cache line, layout.aligned_zeros / ALIGN) and of off, lay and ist in one int64
    buffer after the header that unpack_one reads. The engine then works on their views (unpack_one)."""
    from .layout import ALIGN, aligned_zeros
    fl = [W, state, work]
    fo, n = [], 0
    for a in fl:
        fo.append(n)
        n += -(-a.size // ALIGN) * ALIGN
    F = aligned_zeros(max(n, 1), W.dtype)
    il = [off, lay, ist]
    io, m = [], N_PACK_HEAD
    for a in il:
        io.append(m)
        m += a.size
    I = np.zeros(m, dtype=np.int64)
    for k, (a, o) in enumerate(zip(fl + il, fo + io)):
        I[2 * k], I[2 * k + 1] = o, o + a.size
        (F if k < 3 else I)[o:o + a.size] = a
    return F, I


def unpack_one_py(F, I):
    """unpack_one from Python (the engine's views of the packed buffers)."""
    return getattr(unpack_one, "py_func", unpack_one)(F, I)


@njit
def stream_run_fir_one(X1, Ks, F, I, Y, nan_zero):
    """stream_run for one float32 stream whose products are all GEMVs on input-major weights and whose
    convolution always runs the register tile (lay[GEMV1], one_stream_mode): no gemm_nt, no BLAS.

    Packed arguments (see unpack_one): X1 the T frames flat (T d_in,: a frame is passed as it is, no
    copy), Ks (T, 1), F and I the engine's buffers (stream_run's W, state, work, off, lay and ist are views
    of them: pack_one), Y (T, 1, d_out).

    Its own step loop, _run's for B = 1 with the one-stream ops called directly, not _run inlined with
    a mode: numba's inlining deep-copies the callee's IR twice per call site (_run with its inlined ops:
    ≈ 0.6 s of a cold compile), and layer_mixer's overload is a function of its own to compile, link
    and optimise again inside this one. On the demo's program (python bench/startup.py --compile):
    17 compiled functions, ≈ 7-8 s CPU -> 10 functions, ≈ 3.5 s (docs/PERFORMANCE.md "Cold start ≤ 5 s"). Same ops in
    the same order as _run (tests/test_engine.py, tests/test_gemv.py hold it to the reference)."""
    W, off, lay, state, ist, work = unpack_one(F, I)
    T = Ks.shape[0]
    status = check_inputs_one(X1, Ks, lay, ist, nan_zero)
    if status != OK:
        return status
    ln_eps, gate_eps = W[seg(off, O_EPS, 0)], W[seg(off, O_EPS, 0) + 1]
    d = lay[D_MODEL]
    one = np.int64(1)   # (not the literal 1: a literal argument compiles a second signature of rows_finite)
    for t in range(T):
        p = ist[IST_POS]
        Kt = Ks[t, 0]
        input_projection_one(X1, t, W, off, lay, work, ist)     # h = W_in x_t + b_in
        finite = True
        for l in range(lay[N_LAYERS]):
            _layer_norm(work, lay[W_H], W, seg(off, O_LN1G, l), W, seg(off, O_LN1B, l), d, ln_eps,
                        work, lay[W_U])                         # u = LN1(h)
            finite = rows_finite(work, lay[W_U], d, one, d) and finite
            ring_write(state, work, lay, 1, l, p)               # window of u <- u(t)
            if lay[GATED] != 0:
                gate_one(Ks, t, W, off, lay, work, l, Kt, gate_eps)
            convolve_one(Ks, t, W, off, lay, state, work, l, p, Kt)
            mix_one(Ks, t, W, off, lay, work, l)                # h += Mcat[:, :(K+1)d] V
            if lay[MLP] != 0:
                mlp_one(W, off, lay, work, l, ln_eps)           # h += MLP(LN2(h))
        head_one(t, W, off, lay, state, ist, work, Y, ln_eps)   # y_t (pooled with head='mean')
        if not (finite and output_finite(Y, t)):                # overflow: the caller takes it back
            ist[IST_ERR_T] = t
            return ERR_UNDO
        advance(lay, ist)
    return OK


@njit
def stream_run_fir_one_narrow(X1, Ks, F, I, Y, nan_zero):
    """stream_run_fir_one for a small window (simd.SMALL_MIN <= d_model <= SMALL_MAX: the demo's d = 32;
    kernel_for): the same step loop, line for line (tests/test_engine.py checks the source), with
    convolve_one_narrow, whose product (simd.small_product_pf) compiles only the tiles such a window
    uses (AVX-512: the narrow tile, simd.narrow_product_pf; AVX2: the whole tiles of two strips,
    simd.pair_product_pf), mix_one_narrow (no streamed mixing: a small d never takes it) and
    ring_write_one (ring_write for B = 1), its prefetch region by _prefetch_region_one: ≈ 0.6 s
    (AVX-512) and ≈ 0.8 s (AVX2) less of the demo's cold compile than stream_run_fir_one, outputs bit
    for bit the same (docs/PERFORMANCE.md "Cold start", "Session 12"; the last two ≈ 0.3 s of it,
    "Session 12, round 2"). Packed arguments, as
    stream_run_fir_one's."""
    W, off, lay, state, ist, work = unpack_one(F, I)
    T = Ks.shape[0]
    status = check_inputs_one(X1, Ks, lay, ist, nan_zero)
    if status != OK:
        return status
    ln_eps, gate_eps = W[seg(off, O_EPS, 0)], W[seg(off, O_EPS, 0) + 1]
    d = lay[D_MODEL]
    one = np.int64(1)   # (not the literal 1: a literal argument compiles a second signature of rows_finite)
    for t in range(T):
        p = ist[IST_POS]
        Kt = Ks[t, 0]
        input_projection_one(X1, t, W, off, lay, work, ist)     # h = W_in x_t + b_in
        finite = True
        for l in range(lay[N_LAYERS]):
            _layer_norm(work, lay[W_H], W, seg(off, O_LN1G, l), W, seg(off, O_LN1B, l), d, ln_eps,
                        work, lay[W_U])                         # u = LN1(h)
            finite = rows_finite(work, lay[W_U], d, one, d) and finite
            ring_write_one(state, work, lay, l, p)              # window of u <- u(t)
            if lay[GATED] != 0:
                gate_one(Ks, t, W, off, lay, work, l, Kt, gate_eps)
            convolve_one_narrow(Ks, t, W, off, lay, state, work, l, p, Kt)
            mix_one_narrow(Ks, t, W, off, lay, work, l)                # h += Mcat[:, :(K+1)d] V
            if lay[MLP] != 0:
                mlp_one(W, off, lay, work, l, ln_eps)           # h += MLP(LN2(h))
        head_one(t, W, off, lay, state, ist, work, Y, ln_eps)   # y_t (pooled with head='mean')
        if not (finite and output_finite(Y, t)):                # overflow: the caller takes it back
            ist[IST_ERR_T] = t
            return ERR_UNDO
        advance(lay, ist)
    return OK


@njit
def stream_run_fir_par(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    """stream_run for exact programs with lay[THREADS] > 1: each layer's convolution and mixing
    split across that many threads (conv_mix_par)."""
    return _run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, 4)


@njit
def stream_run_fir_h(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    """stream_run for exact programs with mix_weights="fp16" (lay[MIX16]: Mcat's float16 copy mixed)."""
    return _run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, 5)


@njit
def stream_run_fir_small_h(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    """stream_run_fir_small with Mcat's float16 copy mixed (lay[MIX16])."""
    return _run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, 6)


@njit
def stream_run_fir_hm(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    """stream_run_fir_h with the MLP from the float16 copies of fc1.W / fc2.W too (lay[MLP16])."""
    return _run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, 7)


@njit
def stream_run_fir_small_hm(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    """stream_run_fir_small_h with the MLP from the float16 copies of fc1.W / fc2.W too (lay[MLP16])."""
    return _run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, 8)


@njit
def stream_run_lds(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    """stream_run for spectral="lds" programs."""
    return _run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, 1)


@njit
def stream_run_lru(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    """stream_run for layer kind lru."""
    return _run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, 2)


@njit
def undo_fir(state, work, lay, ist, B, p):
    """undo_frame for exact (ring-buffer FIR) programs."""
    undo_frame(state, work, lay, ist, B, p, 0)


@njit
def undo_lds(state, work, lay, ist, B, p):
    """undo_frame for spectral="lds" programs."""
    undo_frame(state, work, lay, ist, B, p, 1)


@njit
def undo_lru(state, work, lay, ist, B, p):
    """undo_frame for layer kind lru."""
    undo_frame(state, work, lay, ist, B, p, 2)


def _of_mode(lay, fir, lds, lru):
    return lru if lay[LRU_KIND] != 0 else lds if lay[LDS] != 0 else fir


def undo_for(lay):
    """The compiled undo of this layout's mode (compiled on its first call: the first overflow)."""
    return _of_mode(lay, undo_fir, undo_lds, undo_lru)


def kernel_for(lay):
    """The compiled step of this layout's mode (the engine binds it once). Exact programs: the
    convolution's register tile is compiled in where the layout asks for it (lay[CONV_SMALL] > 1,
    numba_config.conv_small_rows: the default); with conv_small = 1 every product is BLAS and the
    tile is not compiled."""
    if lay[THREADS] > 1:     # (the engine's threads=N: conv_mix_par; it runs the tile itself)
        fir = stream_run_fir_par
    elif lay[MLP16] != 0:    # (mix_weights="fp16" with the MLP's weights rounded too, float32 engine)
        fir = stream_run_fir_small_hm if lay[CONV_SMALL] > 1 else stream_run_fir_hm
    elif lay[MIX16] != 0:    # (mix_weights="fp16", Mcat only: the first version's files)
        fir = stream_run_fir_small_h if lay[CONV_SMALL] > 1 else stream_run_fir_h
    elif one_stream_mode(lay):   # (a small window, simd.SMALL_MIN … SMALL_MAX: its tiles alone compiled)
        fir = stream_run_fir_one_narrow if SMALL_MIN <= lay[D_MODEL] <= SMALL_MAX else stream_run_fir_one
    else:
        fir = stream_run_fir_small if lay[CONV_SMALL] > 1 else stream_run_fir
    return _of_mode(lay, fir, stream_run_lds, stream_run_lru)


def one_stream_mode(lay) -> bool:
    """Does this layout run stream_run_fir_one? One float32 stream with input-major weights (lay[GEMV1]) whose
    every convolution product runs the register tile (kernels._use_tile true for every K_t ≤ K̄: the
    tile for up to K̄ rows, a window at least the narrow tile wide, a one-row window within
    simd.TILE_GEMV_MAX)."""
    d, L = int(lay[D_MODEL]), int(lay[L_WIN])
    return (lay[GEMV1] != 0 and lay[THREADS] <= 1 and lay[MIX16] == 0 and lay[MLP16] == 0 and lay[LDS] == 0
            and lay[LRU_KIND] == 0 and lay[CONV_SMALL] >= lay[K_MAX] and d >= HALF_COLS and L * d <= TILE_GEMV_MAX)


def stream_run(X, Ks, W, off, lay, state, ist, work, Y, nan_zero):
    """Advance B streams by T frames: X (T, B, d_in), Ks (T, B) int64 -> Y (T, B, d_out).

    Validates the whole block first (nothing changes on error) and returns a status code.
    With nan_zero, non-finite input values are read as 0 (counted in ist[IST_NREPLACED]).
    A frame whose values overflow (a non-finite u in any layer, or y) stops the block with
    ERR_UNDO (ist[IST_ERR_T] = t; frames before t are consumed) and its writes still in the state:
    the caller calls undo_for(lay)(state, work, lay, ist, B, ist[IST_POS]) to take it back (state as
    before it), then either reports the overflow or (nan_zero) outputs 0 for it, counts it in
    ist[IST_SKIPPED] and runs the frames after it (StreamEngine._overflowed; the reference kernel
    does all of that itself and returns ERR_OVERFLOW or OK).

    Dispatches to the compiled step of the layout's mode (kernel_for); the engine binds that
    directly. reference.stream_run_ref is its numpy float64 twin (same signature). (The one-stream
    kernel takes packed arguments: here packed into copies, and the state copied back.)"""
    k = kernel_for(lay)
    if k not in (stream_run_fir_one, stream_run_fir_one_narrow):
        return k(X, Ks, W, off, lay, state, ist, work, Y, nan_zero)
    F, I = pack_one(W, off, lay, state, ist, work)
    status = k(np.ascontiguousarray(X).reshape(-1), Ks, F, I, Y, nan_zero)
    _, _, _, s, i, w = unpack_one_py(F, I)
    state[:], ist[:], work[:] = s, i, w
    return status
