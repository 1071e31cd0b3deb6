"""The streaming step as numba kernels, each beside a plain numpy `*_ref` with the same signature.

Everything a step touches lives in a handful of flat arrays, so that one call crosses the
Python/numba boundary with few arguments and the whole multi-layer step (all layers, all
streams, all frames of a block) runs in compiled code with nothing allocated:

  W     (n_w,)  weights, packed by `pack_weights` at the offsets in `off` (engine dtype)
  off   (N_SEG,) int64 offsets of the segments SEGMENTS into W (64-byte aligned)
  dims  (N_DIM,) int64: d_in d d_out n_layers L K̄ d_gate d_hidden gated mlp pool_W pooled
  hist  (n_layers * B * d * 2L,) input history of every layer: for layer l, stream b, channel j
        the last L inputs of that channel, each written twice (at p and p + L) so that the
        window of step t is the contiguous slice [p + 1, p + L] (oldest first)
  pool  (B * pool_W * d_out,) ring of the last pool_W per-step outputs (head = "mean")
  ist   (N_IST,) int64: ring position p, steps seen, pool position, and error details
  work  (B * work_len(dims),) per-stream scratch (see `work_sections`)

Math (DESIGN.md): per layer u = LN1(h); the window of u is convolved with the reversed filters
`phir[k, τ'] = φ_k(L-1-τ')` for k < K only (a (K × L)·(L × d) product); the gate gives α over the
active prefix; V = [u, α_1 c_1, …, α_K c_K] and y = Mcat[:, :(K+1)d] V with Mcat = [D | σ_k^{1/4} M_k],
so work scales with K: channels above K are neither convolved nor mixed.
"""
from __future__ import annotations

import math

import numpy as np

from .numba_config import njit

SEGMENTS = ("inp.W", "inp.b", "ln1.g", "ln1.b", "phir", "Mcat", "W1", "b1", "W2", "b2",
            "ln2.g", "ln2.b", "fc1.W", "fc1.b", "fc2.W", "fc2.b", "ln_f.g", "ln_f.b",
            "out.W", "out.b", "eps")
(O_INPW, O_INPB, O_LN1G, O_LN1B, O_PHIR, O_MCAT, O_W1, O_B1, O_W2, O_B2, O_LN2G, O_LN2B,
 O_FC1W, O_FC1B, O_FC2W, O_FC2B, O_LNFG, O_LNFB, O_OUTW, O_OUTB, O_EPS) = range(len(SEGMENTS))
N_SEG = len(SEGMENTS)

DIM_NAMES = ("d_in", "d", "d_out", "n_layers", "L", "k_max", "d_gate", "d_hidden", "gated", "mlp",
             "pool_W", "pooled")
N_DIM = len(DIM_NAMES)

# ist: ring position, steps seen, pool position, then where the last error was found.
IST_POS, IST_T, IST_POOL, IST_ERR_T, IST_ERR_B, IST_ERR_J, IST_ERR_K, IST_NREPLACED = range(8)
N_IST = 8

OK, ERR_NONFINITE, ERR_BUDGET = 0, 1, 2

_ALIGN = 16  # elements: 64 bytes for float32, 128 for float64


def segment_shapes(dims) -> dict:
    """Shape of every segment of W (stacked over layers where per layer); size 0 if absent."""
    d_in, d, d_out, nl, L, Kb, dg, dh, gated, mlp = (int(v) for v in dims[:10])
    g, m = bool(gated), bool(mlp)
    return {
        "inp.W": (d, d_in), "inp.b": (d,), "ln1.g": (nl, d), "ln1.b": (nl, d),
        "phir": (nl, Kb, L), "Mcat": (nl, d, (Kb + 1) * d),
        "W1": (nl, dg, d) if g else (0,), "b1": (nl, dg) if g else (0,),
        "W2": (nl, Kb, dg) if g else (0,), "b2": (nl, Kb) if g else (0,),
        "ln2.g": (nl, d) if m else (0,), "ln2.b": (nl, d) if m else (0,),
        "fc1.W": (nl, dh, d) if m else (0,), "fc1.b": (nl, dh) if m else (0,),
        "fc2.W": (nl, d, dh) if m else (0,), "fc2.b": (nl, d) if m else (0,),
        "ln_f.g": (d,), "ln_f.b": (d,), "out.W": (d_out, d), "out.b": (d_out,), "eps": (2,),
    }


def pack_weights(arrays: dict, dims: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Program arrays (float64, names as SEGMENTS) -> (W flat in `dtype`, off int64)."""
    shapes = segment_shapes(dims)
    off = np.zeros(N_SEG, dtype=np.int64)
    n = 0
    for i, name in enumerate(SEGMENTS):
        off[i] = n
        size = int(np.prod(shapes[name]))
        n += -(-size // _ALIGN) * _ALIGN
    W = np.zeros(max(n, 1), dtype=dtype)
    for i, name in enumerate(SEGMENTS):
        size = int(np.prod(shapes[name]))
        if size:
            a = np.asarray(arrays[name], dtype=np.float64)
            if a.shape != tuple(shapes[name]):
                raise ValueError(f"segment {name}: shape {a.shape}, expected {shapes[name]}")
            W[off[i]:off[i] + size] = a.ravel()
    return W, off


def unpack_weights(W: np.ndarray, off: np.ndarray, dims: np.ndarray) -> dict:
    """Inverse of pack_weights (float64 copies), for the reference and for checks."""
    shapes = segment_shapes(dims)
    out = {}
    for i, name in enumerate(SEGMENTS):
        size = int(np.prod(shapes[name]))
        out[name] = np.asarray(W[off[i]:off[i] + size], dtype=np.float64).reshape(shapes[name])
    return out


def work_len(dims) -> int:
    """Scratch elements per stream: x | h | u | z | y | V | g | s | a | o (see work_sections)."""
    d_in, d, d_out, nl, L, Kb, dg, dh = (int(v) for v in dims[:8])
    n = d_in + 4 * d + (Kb + 1) * d + dg + Kb + dh + d_out
    return -(-n // _ALIGN) * _ALIGN


# --------------------------------------------------------------------------------------------
# Small dense products. out[i, j] (=|+=) Σ_m A[a0 + i lda + m] · B[b0 + j ldb + m]: both operands
# contiguous along the reduction, so every inner loop is a plain dot product that LLVM
# vectorizes (fastmath lets it keep several partial sums). Slices are views: nothing allocates.
# --------------------------------------------------------------------------------------------

@njit
def _tile4x4(A, pa, lda, Bm, pb, ldb, n, out, q, ldo, acc):
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
    i = 0
    while i + 4 <= Ma:
        j = 0
        while j + 4 <= Nb:
            _tile4x4(A, a0 + i * lda, lda, Bm, b0 + j * ldb, ldb, n, out, o0 + i * ldo + j, ldo, acc)
            j += 4
        while j < Nb:  # a column of B against four rows of A
            _tile1x4(Bm, b0 + j * ldb, A, a0 + i * lda, lda, n, out, o0 + i * ldo + j, ldo, acc)
            j += 1
        i += 4
    while i < Ma:
        j = 0
        while j + 8 <= Nb:  # single rows (B=1 GEMVs): eight outputs share each load of A
            _tile1x8(A, a0 + i * lda, Bm, b0 + j * ldb, ldb, n, out, o0 + i * ldo + j, acc)
            j += 8
        while j + 4 <= Nb:
            _tile1x4(A, a0 + i * lda, Bm, b0 + j * ldb, ldb, n, out, o0 + i * ldo + j, 1, acc)
            j += 4
        while j < Nb:
            _tile1x1(A, a0 + i * lda, Bm, b0 + j * ldb, n, out, o0 + i * ldo + j, acc)
            j += 1
        i += 1


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
    mu = x[xo] * 0
    for j in range(n):
        mu += x[xo + j]
    mu /= n
    var = mu * 0
    for j in range(n):
        c = x[xo + j] - mu
        var += c * c
    var /= n
    r = 1.0 / math.sqrt(var + eps)
    for j in range(n):
        out[oo + j] = (x[xo + j] - mu) * r * g[go + j] + bb[bo + j]


# erf(z) ≈ z P(z²) / Q(z²) on z ∈ [-4, 4] (clamped: |erf| rounds to 1 in float32 beyond), the
# rational fit of Eigen's `generic_fast_erf_float`; evaluated in float64 its error is < 7e-8, below
# float32 resolution. Branch-free, so LLVM vectorizes it (libm `erf` is a scalar call per element).
_ERF_P = (-1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04, -5.69250639462346e-05,
          -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10)
_ERF_Q = (-1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03, -2.13374055278905e-04,
          -1.45660718464996e-05)


@njit
def _gelu(x, xo, n):
    if x.itemsize == 4:   # float32 engine: the vectorized rational erf (compile-time branch)
        p0, p1, p2, p3, p4, p5, p6 = _ERF_P
        q0, q1, q2, q3, q4 = _ERF_Q
        for j in range(n):
            v = float(x[xo + j])
            z = min(max(v * 0.7071067811865476, -4.0), 4.0)
            z2 = z * z
            p = z * (p0 + z2 * (p1 + z2 * (p2 + z2 * (p3 + z2 * (p4 + z2 * (p5 + z2 * p6))))))
            q = q0 + z2 * (q1 + z2 * (q2 + z2 * (q3 + z2 * q4)))
            x[xo + j] = 0.5 * v * (1.0 + p / q)
    else:                 # float64 engine: libm erf, as the reference
        for j in range(n):
            v = x[xo + j]
            x[xo + j] = 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------

@njit(fastmath=False)  # fastmath would assume no NaN/Inf and fold these checks away
def check_inputs(X, Ks, dims, ist, nan_zero):
    """Status of a block before any state changes: OK, ERR_BUDGET or ERR_NONFINITE (where in ist)."""
    T, B, d_in = X.shape
    Kb = dims[5]
    for t in range(T):
        for b in range(B):
            k = Ks[t, b]
            if k < 1 or k > Kb:
                ist[IST_ERR_T] = t
                ist[IST_ERR_B] = b
                ist[IST_ERR_K] = k
                return ERR_BUDGET
    if not nan_zero:
        for t in range(T):
            for b in range(B):
                for j in range(d_in):
                    if not np.isfinite(X[t, b, j]):
                        ist[IST_ERR_T] = t
                        ist[IST_ERR_B] = b
                        ist[IST_ERR_J] = j
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


@njit
def stream_run(X, Ks, W, off, dims, hist, pool, ist, work, Y, nan_zero):
    """Advance B streams by T frames: X (T, B, d_in), Ks (T, B) int64 -> Y (T, B, d_out).

    Validates the whole block first (nothing changes on error) and returns a status code.
    With nan_zero, non-finite input values are read as 0 (counted in ist[IST_NREPLACED]).
    """
    status = check_inputs(X, Ks, dims, ist, nan_zero)
    if status != OK:
        return status
    T, B, _ = X.shape
    d_in = dims[0]
    d = dims[1]
    d_out = dims[2]
    nl = dims[3]
    L = dims[4]
    Kb = dims[5]
    dg = dims[6]
    dh = dims[7]
    gated = dims[8] != 0
    mlp = dims[9] != 0
    PW = dims[10]
    pooled = dims[11] != 0
    ln_eps = W[off[O_EPS]]
    gate_eps = W[off[O_EPS] + 1]
    wl = work.shape[0] // B
    # per-stream work sections
    sx = 0
    sh = sx + d_in
    su = sh + d
    sz = su + d
    sy = sz + d
    sV = sy + d
    sg = sV + (Kb + 1) * d
    ss = sg + dg
    sa = ss + Kb
    so = sa + dh
    ldM = (Kb + 1) * d
    two_L = 2 * L
    for t in range(T):
        p = ist[IST_POS]
        kmax_t = 1
        for b in range(B):
            if Ks[t, b] > kmax_t:
                kmax_t = Ks[t, b]
        # input projection h = W_in x + b_in (x sanitized into work first)
        for b in range(B):
            _load_frame(X, t, b, work, b * wl + sx, d_in, ist)
        gemm_nt(work, sx, wl, W, off[O_INPW], d_in, d_in, work, sh, wl, B, d, False)
        for b in range(B):
            wb = b * wl
            for i in range(d):
                work[wb + sh + i] += W[off[O_INPB] + i]
        for l in range(nl):
            # u = LN1(h); record u in the layer's history (twice, so the window is contiguous)
            for b in range(B):
                wb = b * wl
                _layer_norm(work, wb + sh, W, off[O_LN1G] + l * d, W, off[O_LN1B] + l * d, d,
                            ln_eps, work, wb + su)
                hb = (l * B + b) * d * two_L
                for j in range(d):
                    v = work[wb + su + j]
                    hist[hb + j * two_L + p] = v
                    hist[hb + j * two_L + p + L] = v
                    work[wb + sV + j] = v          # V[:d] = u, multiplies D
            # gate: s = W2 GELU(W1 u + b1) + b2 for the active prefix, α = softmax(s̃)
            if gated:
                gemm_nt(work, su, wl, W, off[O_W1] + l * dg * d, d, d, work, sg, wl, B, dg, False)
                for b in range(B):
                    wb = b * wl
                    for i in range(dg):
                        work[wb + sg + i] += W[off[O_B1] + l * dg + i]
                    _gelu(work, wb + sg, dg)
                gemm_nt(work, sg, wl, W, off[O_W2] + l * Kb * dg, dg, dg, work, ss, wl, B, kmax_t, False)
                for b in range(B):
                    wb = b * wl
                    K = Ks[t, b]
                    nrm = work[wb + ss] * 0
                    for k in range(K):
                        v = work[wb + ss + k] + W[off[O_B2] + l * Kb + k]
                        work[wb + ss + k] = v
                        nrm += v * v
                    scale = math.sqrt(K) / (math.sqrt(nrm) + gate_eps)
                    mx = work[wb + ss] * scale
                    for k in range(K):
                        v = work[wb + ss + k] * scale
                        work[wb + ss + k] = v
                        if v > mx:
                            mx = v
                    tot = mx * 0
                    for k in range(K):
                        e = math.exp(work[wb + ss + k] - mx)
                        work[wb + ss + k] = e
                        tot += e
                    inv = 1.0 / tot
                    for k in range(K):
                        work[wb + ss + k] *= inv
            # convolution of the window with the first K reversed filters: (K × L)·(L × d)
            for b in range(B):
                wb = b * wl
                K = Ks[t, b]
                hb = (l * B + b) * d * two_L
                gemm_nt(W, off[O_PHIR] + l * Kb * L, L, hist, hb + p + 1, two_L, L,
                        work, wb + sV + d, d, K, d, False)
                if gated:
                    for k in range(K):
                        a = work[wb + ss + k]
                        q = wb + sV + (k + 1) * d
                        for j in range(d):
                            work[q + j] *= a
            # mixing y = [D | σ^{1/4} M_1..K] V, four streams at a time (zero-padded to their max K)
            b0 = 0
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
                gemm_nt(work, b0 * wl + sV, wl, W, off[O_MCAT] + l * d * ldM, ldM, (kg + 1) * d,
                        work, b0 * wl + sh, wl, nb, d, True)
                b0 += nb
            if mlp:
                for b in range(B):
                    wb = b * wl
                    _layer_norm(work, wb + sh, W, off[O_LN2G] + l * d, W, off[O_LN2B] + l * d, d,
                                ln_eps, work, wb + sz)
                gemm_nt(work, sz, wl, W, off[O_FC1W] + l * dh * d, d, d, work, sa, wl, B, dh, False)
                for b in range(B):
                    wb = b * wl
                    for i in range(dh):
                        work[wb + sa + i] += W[off[O_FC1B] + l * dh + i]
                    _gelu(work, wb + sa, dh)
                    for i in range(d):
                        work[wb + sh + i] += W[off[O_FC2B] + l * d + i]
                gemm_nt(work, sa, wl, W, off[O_FC2W] + l * d * dh, dh, dh, work, sh, wl, B, d, True)
        # head: y = W_out LN_f(h) + b_out, then the causal mean over the last min(t, W) outputs
        for b in range(B):
            wb = b * wl
            _layer_norm(work, wb + sh, W, off[O_LNFG], W, off[O_LNFB], d, ln_eps, work, wb + sz)
        gemm_nt(work, sz, wl, W, off[O_OUTW], d, d, work, so, wl, B, d_out, False)
        steps = ist[IST_T] + 1
        pp = ist[IST_POOL]
        for b in range(B):
            wb = b * wl
            for i in range(d_out):
                work[wb + so + i] += W[off[O_OUTB] + i]
            if pooled:
                pb = b * PW * d_out
                for i in range(d_out):
                    pool[pb + pp * d_out + i] = work[wb + so + i]
                n = min(steps, PW)
                for i in range(d_out):
                    acc = work[wb + so] * 0
                    for r in range(n):  # oldest first
                        slot = (pp - n + 1 + r + PW) % PW
                        acc += pool[pb + slot * d_out + i]
                    Y[t, b, i] = acc / n
            else:
                for i in range(d_out):
                    Y[t, b, i] = work[wb + so + i]
        ist[IST_POS] = (p + 1) % L
        ist[IST_T] = steps
        if pooled:
            ist[IST_POOL] = (pp + 1) % PW
    return OK


def stream_run_ref(X, Ks, W, off, dims, hist, pool, ist, work, Y, nan_zero):
    """Plain numpy float64 version of `stream_run`, same signature and state layout, for clarity.

    Reads the same packed weights and ring buffers (so state can be handed from one to the other);
    `work` is not used.
    """
    T, B, d_in = X.shape
    d_in, d, d_out, nl, L, Kb, dg, dh, gated, mlp, PW, pooled = (int(v) for v in dims[:12])
    Ks = np.asarray(Ks)
    if Ks.min() < 1 or Ks.max() > Kb:
        t, b = np.argwhere((Ks < 1) | (Ks > Kb))[0]
        ist[IST_ERR_T], ist[IST_ERR_B], ist[IST_ERR_K] = t, b, Ks[t, b]
        return ERR_BUDGET
    bad = ~np.isfinite(X)
    if bad.any() and not nan_zero:
        ist[IST_ERR_T], ist[IST_ERR_B], ist[IST_ERR_J] = np.argwhere(bad)[0]
        return ERR_NONFINITE
    w = unpack_weights(W, off, dims)
    ln_eps, gate_eps = w["eps"]
    H = hist.reshape(nl, B, d, 2 * L)
    P = pool.reshape(B, PW, d_out) if pooled else None

    def ln(x, g, b):
        mu = x.mean()
        return (x - mu) / math.sqrt(((x - mu) ** 2).mean() + ln_eps) * g + b

    def gelu(x):
        from scipy.special import erf
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))

    for t in range(T):
        p = int(ist[IST_POS])
        steps = int(ist[IST_T]) + 1
        pp = int(ist[IST_POOL])
        for b in range(B):
            K = int(Ks[t, b])
            x = np.where(bad[t, b], 0.0, np.asarray(X[t, b], dtype=np.float64))
            ist[IST_NREPLACED] += int(bad[t, b].sum())
            h = w["inp.W"] @ x + w["inp.b"]
            for l in range(nl):
                u = ln(h, w["ln1.g"][l], w["ln1.b"][l])
                H[l, b, :, p] = u
                H[l, b, :, p + L] = u
                window = H[l, b, :, p + 1:p + 1 + L].astype(np.float64)        # (d, L), oldest first
                c = w["phir"][l, :K] @ window.T                                 # (K, d)
                if gated:
                    s = w["W2"][l, :K] @ gelu(w["W1"][l] @ u + w["b1"][l]) + w["b2"][l, :K]
                    s = s * math.sqrt(K) / (np.sqrt(np.sum(s * s)) + gate_eps)
                    e = np.exp(s - s.max())
                    alpha = e / e.sum()
                else:
                    alpha = np.ones(K)
                V = np.concatenate([u, (alpha[:, None] * c).ravel()])
                h = h + w["Mcat"][l][:, :(K + 1) * d] @ V
                if mlp:
                    z = ln(h, w["ln2.g"][l], w["ln2.b"][l])
                    h = h + w["fc2.W"][l] @ gelu(w["fc1.W"][l] @ z + w["fc1.b"][l]) + w["fc2.b"][l]
            y = w["out.W"] @ ln(h, w["ln_f.g"], w["ln_f.b"]) + w["out.b"]
            if pooled:
                P[b, pp] = y
                n = min(steps, PW)
                y = np.mean([P[b, (pp - n + 1 + r) % PW] for r in range(n)], axis=0)
            Y[t, b] = y
        ist[IST_POS] = (p + 1) % L
        ist[IST_T] = steps
        if pooled:
            ist[IST_POOL] = (pp + 1) % PW
    return OK
