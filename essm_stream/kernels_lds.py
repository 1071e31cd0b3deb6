"""The LDS (ladder) filter stage as numba kernels, each beside a plain numpy `*_ref` with the same
signature (the math is in essm_stream/lds.py).

Flat arrays, offsets and sizes only, nothing allocated:

  V     section states of one layer and stream, (N, d) row-major at offset v0: V[v0 + n d + j]
  X     the new input u(t) at x0 (d values, contiguous)
  Xold  the input leaving the window u(t-L) at o0 (d values, contiguous; zeros in no-buffer mode)
  Wt    weights: poles a at a0 (N), window vector b_L at b0 (N), readout Cv (K̄, N) at c0
        (Cv[k, n] = C[k, n] sqrt(1 - a_n^2), the readout of the raw states)
  S     scratch of d values at s0 (the all-pass signal travelling down the chain)
  out   the filter outputs c_k(t) for k < K at q0, (K, d) row-major: out[q0 + k d + j]

Per step and channel: 3N multiply-adds for the chain, N for the window correction, K·N for the
readout, against K·L for the exact ring-buffer convolution.
"""
from __future__ import annotations

import numpy as np

from .layout import (D_MODEL, GATED, L_WIN, LDS_BUF, LDS_N, N_LAYERS, O_LDSA, O_LDSBL, O_LDSC, ST_LDS,
                     ST_LRING, W_LO, W_LUNDO, W_LW, W_S, W_U, W_UNDO, W_V, WL)
from .numba_config import njit


@njit
def ladder_update(V, v0, X, x0, Xold, o0, Wt, a0, b0, S, s0, N, d):
    """s(t) = A s(t-1) + b u(t) - b_L u(t-L), by the chain of all-pass sections (vectorized over d).

    Slices are views (nothing allocates); they also let LLVM see the d-long rows as disjoint and
    vectorize (4x faster than the same loops over flat offsets, measured)."""
    w = S[s0:s0 + d]
    x = X[x0:x0 + d]
    xo = Xold[o0:o0 + d]
    for j in range(d):
        w[j] = x[j]
    for n in range(N):
        a = Wt[a0 + n]
        bl = Wt[b0 + n]
        v = V[v0 + n * d:v0 + n * d + d]
        for j in range(d):
            vo = v[j]
            vn = a * vo + w[j]
            w[j] = vo - a * vn
            v[j] = vn - bl * xo[j]


def ladder_update_ref(V, v0, X, x0, Xold, o0, Wt, a0, b0, S, s0, N, d):
    for j in range(d):
        w = float(X[x0 + j])
        for n in range(N):
            a = float(Wt[a0 + n])
            vo = float(V[v0 + n * d + j])
            vn = a * vo + w
            w = vo - a * vn
            V[v0 + n * d + j] = vn - float(Wt[b0 + n]) * float(Xold[o0 + j])


@njit
def ladder_readout(V, v0, Wt, c0, ldc, out, q0, K, N, d):
    """out[k, :] = Σ_n Cv[k, n] V[n, :] for k < K (budget K slices the readout: cost K·N·d).

    Four output rows share each load of a state row; the rows are d-long slices, so the inner
    loop is a vectorized axpy over channels (no horizontal sums, which a reduction over the short
    N would need)."""
    k = 0
    while k + 4 <= K:
        q = q0 + k * d
        o0 = out[q:q + d]
        o1 = out[q + d:q + 2 * d]
        o2 = out[q + 2 * d:q + 3 * d]
        o3 = out[q + 3 * d:q + 4 * d]
        for j in range(d):
            o0[j] = 0.0
            o1[j] = 0.0
            o2[j] = 0.0
            o3[j] = 0.0
        ca = c0 + k * ldc
        for n in range(N):
            c_0 = Wt[ca + n]
            c_1 = Wt[ca + ldc + n]
            c_2 = Wt[ca + 2 * ldc + n]
            c_3 = Wt[ca + 3 * ldc + n]
            x = V[v0 + n * d:v0 + n * d + d]
            for j in range(d):
                xj = x[j]
                o0[j] += c_0 * xj
                o1[j] += c_1 * xj
                o2[j] += c_2 * xj
                o3[j] += c_3 * xj
        k += 4
    while k < K:
        o = out[q0 + k * d:q0 + k * d + d]
        for j in range(d):
            o[j] = 0.0
        for n in range(N):
            c = Wt[c0 + k * ldc + n]
            x = V[v0 + n * d:v0 + n * d + d]
            for j in range(d):
                o[j] += c * x[j]
        k += 1


def ladder_readout_ref(V, v0, Wt, c0, ldc, out, q0, K, N, d):
    Cv = np.asarray(Wt[c0:c0 + K * ldc], dtype=np.float64).reshape(K, ldc)[:, :N]
    St = np.asarray(V[v0:v0 + N * d], dtype=np.float64).reshape(N, d)
    out[q0:q0 + K * d] = (Cv @ St).ravel()


@njit
def ladder_run(U, Uold, Wt, N, K, V, S, out):
    """Stream a block (tests, benchmarks): U, Uold (T, d) -> out (T, K*d) (row t = (K, d) row-major);
    V (N*d,) state, S (d,) scratch; Wt from `ladder_weights`."""
    T, d = U.shape
    for t in range(T):
        ladder_update(V, 0, U[t], 0, Uold[t], 0, Wt, 0, N, S, 0, N, d)
        ladder_readout(V, 0, Wt, 2 * N, N, out[t], 0, K, N, d)


def ladder_weights(poles, bL, Cv, dtype) -> np.ndarray:
    """Pack [a | b_L | Cv] (the layout `ladder_run` reads) in the engine dtype."""
    return np.concatenate([np.asarray(poles, np.float64), np.asarray(bL, np.float64),
                           np.asarray(Cv, np.float64).ravel()]).astype(dtype)


# --------------------------------------------------------------------------------------------
# The engine's ops for spectral="lds" (called by kernels.stream_run in place of ring_write and
# convolve; offsets from layout.Layout, see layout.SEGMENTS "lds.*", SCRATCH lw/lo, STATE lds/lring)
# --------------------------------------------------------------------------------------------

@njit(inline="always")
def _seg(off, s, l):
    return off[2 * s] + l * off[2 * s + 1]


@njit(inline="always")
def lds_ring(state, work, lay, B, l, p):
    """V[:d] = u (D's input); with the window buffer, lo = u(t-L) (row p of the layer's (L, d) ring)
    and row p = u(t). Without it, lo = 0 (no correction: the no-buffer variant). u(t-L) also goes
    to the frame's undo record (layer l's d slots of `undo`, as ring_write does in exact mode)."""
    wl, d, L = lay[WL], lay[D_MODEL], lay[L_WIN]
    buf = lay[LDS_BUF] != 0
    for b in range(B):
        wb = b * wl
        u = work[wb + lay[W_U]:wb + lay[W_U] + d]
        v = work[wb + lay[W_V]:wb + lay[W_V] + d]
        lo = work[wb + lay[W_LO]:wb + lay[W_LO] + d]
        if buf:
            r = lay[ST_LRING] + ((l * B + b) * L + p) * d
            row = state[r:r + d]
            undo = work[wb + lay[W_UNDO] + l * d:wb + lay[W_UNDO] + (l + 1) * d]
            for j in range(d):
                lo[j] = row[j]
                undo[j] = row[j]
                row[j] = u[j]
                v[j] = u[j]
        else:
            for j in range(d):
                lo[j] = 0.0
                v[j] = u[j]


@njit(inline="always")
def lds_convolve(Ks, t, W, off, lay, state, work, B, l):
    """c_k ≈ (Φ_k * u)(t) for k < K from the ladder (chain update, then the first K readout rows),
    into V[d:]; × α_k if gated. Cost per stream: ~4 N d for the chain, K N d for the readout, N d
    to keep the state before the update in `lundo` (an overflowing frame is taken back)."""
    wl, d, N = lay[WL], lay[D_MODEL], lay[LDS_N]
    sV = lay[W_V]
    a0, b0, c0 = _seg(off, O_LDSA, l), _seg(off, O_LDSBL, l), _seg(off, O_LDSC, l)
    for b in range(B):
        wb = b * wl
        K = Ks[t, b]
        v0 = lay[ST_LDS] + (l * B + b) * N * d
        keep = work[wb + lay[W_LUNDO] + l * N * d:wb + lay[W_LUNDO] + (l + 1) * N * d]
        cur = state[v0:v0 + N * d]
        for i in range(N * d):
            keep[i] = cur[i]
        ladder_update(state, v0, work, wb + lay[W_U], work, wb + lay[W_LO], W, a0, b0, work,
                      wb + lay[W_LW], N, d)
        ladder_readout(state, v0, W, c0, N, work, wb + sV + d, K, N, d)
        if lay[GATED] != 0:
            for k in range(K):
                a = work[wb + lay[W_S] + k]
                q = wb + sV + (k + 1) * d
                for j in range(d):
                    work[q + j] *= a


@njit
def lds_undo(state, work, lay, B, p):
    """Take back what an overflowing frame wrote: every layer's ladder state (from `lundo`) and, with
    the window buffer, ring row p (from `undo`). ist has not advanced yet."""
    wl, d, L, N, nl = lay[WL], lay[D_MODEL], lay[L_WIN], lay[LDS_N], lay[N_LAYERS]
    for l in range(nl):
        for b in range(B):
            wb = b * wl
            v0 = lay[ST_LDS] + (l * B + b) * N * d
            k0 = wb + lay[W_LUNDO] + l * N * d
            for i in range(N * d):
                state[v0 + i] = work[k0 + i]
            if lay[LDS_BUF] != 0:
                r = lay[ST_LRING] + ((l * B + b) * L + p) * d
                u0 = wb + lay[W_UNDO] + l * d
                for j in range(d):
                    state[r + j] = work[u0 + j]
