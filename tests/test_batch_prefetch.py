"""The batched step's prefetches and its softmax (docs/PERFORMANCE.md "Session 13: the batched step on
the Intel box"): kernels.convolve_small_pf prefetching the next history block's window, kernels.mix_tiled_pf
prefetching Mcat a block of τ ahead (rules numba_config.window_prefetch_min / prefetch_bytes, from the L2's
size), and _gate_softmax_v's vector softmax for float32 engines. Both branches of each: a prefetch changes
no value (bit for bit), the softmaxes and the products against numpy in float64, and an engine whose
windows and mixing weights pass this machine's rules against the float64 reference. No timing here."""
from __future__ import annotations

import numpy as np

from essm_stream import kernels as k
from essm_stream import layout as lo
from essm_stream import simd
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
from essm_stream.numba_config import njit, prefetch_bytes, window_prefetch_min

OFF = 1 << 62
TOL32 = 2e-5   # float32 kernel vs float64 reference, relative to max |y_ref| (as tests/test_engine.py)
# K̄ = 4 row tiles: the window prefetch's least rows for a 64-column window (a line per step of τ)
CFG = ESSMConfig(d_in=5, d_out=3, d_model=64, n_layers=2, seq_len=16, k_max=4 * simd.TILE_ROWS, d_gate=8)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@njit(cache=False)
def _layer(Ks, W, off, lay, state, ist, work, B, l, win_min, mix_min, vec):
    p = ist[lo.IST_POS]
    Kt = Ks[0, 0]
    gate_eps = W[k.seg(off, k.O_EPS, 0) + 1]
    k.gate_v(Ks, 0, W, off, lay, work, B, l, Kt, gate_eps, vec)
    k.convolve_small_pf(Ks, 0, W, off, lay, state, work, B, l, p, Kt, win_min)
    k.mix_tiled_pf(Ks, 0, W, off, lay, work, B, l, mix_min)


def _engine(B):
    eng = StreamEngine(tiny_program(CFG, seed=3), batch=B, dtype=np.float32)
    lay = eng._lay
    assert lay[lo.GEMM_T] == 1 and lay[lo.CONV_SMALL] > 1 and lay[lo.HIST_BLK] < B   # several blocks
    rng = np.random.default_rng(3)
    eng.run(rng.standard_normal((CFG.seq_len + 3, B, CFG.d_in)).astype(np.float32), CFG.k_max)
    return eng


@njit(cache=False)
def _window_pf(Kt, lay, B, state):
    # (convolve_small_pf's rule at win_min = 0, as written there)
    return lay[lo.HIST_BLK] * lay[lo.D_MODEL] * state.itemsize <= simd.LINE * simd.row_tiles(Kt)


def test_window_prefetch_rows_rule():
    """The window prefetch runs from K_t = 4 row tiles (a 64-column window's row is 4 lines) and not below."""
    eng = _engine(3)
    R = simd.TILE_ROWS
    assert _window_pf(4 * R, eng._lay, 3, eng._state) and not _window_pf(2 * R, eng._lay, 3, eng._state)


def test_prefetch_branches_bit_identical_and_match_numpy():
    """One layer's gate, convolution and mixing of B = 3 streams at K = K̄ (Mcat's (K̄+1) d rows: more
    than one block of τ) with each prefetch on (win_min / mix_min 0) and off, and the softmax by vector
    code and by libm's exp: the prefetches change no bit; each result against numpy in float64."""
    B = 3
    eng = _engine(B)
    W, off, lay, state, ist = eng._W, eng._off, eng._lay, eng._state, eng._ist
    assert (CFG.k_max + 1) * CFG.d_model > simd.TAU_BLOCK
    Ks = np.full((1, B), CFG.k_max, np.int64)
    wl, d, L, K = lay[lo.WL], CFG.d_model, CFG.seq_len, CFG.k_max
    w = eng.layout.unpack(W)
    for l in range(CFG.n_layers):
        outs = {}
        for key in [(0, 0, True), (OFF, OFF, True), (0, OFF, True), (OFF, 0, True), (OFF, OFF, False)]:
            work = eng._work.copy()
            _layer(Ks, W, off, lay, state, ist, work, B, l, *key)
            outs[key] = work
        on = outs[(0, 0, True)]
        for key in [(OFF, OFF, True), (0, OFF, True), (OFF, 0, True)]:
            assert np.array_equal(outs[key], on), key
        work0 = eng._work.astype(np.float64)
        p = int(ist[lo.IST_POS])
        for b in range(B):
            wb = b * wl
            # softmax: both ways against numpy (the scores the gate's products left, + b2)
            s = outs[(OFF, OFF, False)]
            alpha_lib = s[wb + lay[lo.W_S]:wb + lay[lo.W_S] + K].astype(np.float64)
            alpha = on[wb + lay[lo.W_S]:wb + lay[lo.W_S] + K].astype(np.float64)
            assert abs(alpha.sum() - 1) < 1e-5 and np.allclose(alpha, alpha_lib, rtol=1e-5, atol=1e-7)
            # convolution: V row k + 1 = α_k Σ_τ φ_k(τ) u(t - τ), from the block's window in the state
            o, wd, b0, nb = lo.hist_block(lay, B, l, b // lay[lo.HIST_BLK])
            win = state[o + (p + 1) * wd:o + (p + 1 + L) * wd].astype(np.float64).reshape(L, wd)
            cols = slice((b - b0) * d, (b - b0 + 1) * d)
            phir = W[k.seg(off, k.O_PHIR, l):k.seg(off, k.O_PHIR, l) + K * L].astype(np.float64).reshape(K, L)
            Vref = (phir @ win[:, cols]) * alpha[:, None]
            V = on[wb + lay[lo.W_V]:wb + lay[lo.W_V] + (K + 1) * d].astype(np.float64).reshape(K + 1, d)
            assert rel_err(V[1:], Vref) <= 2e-6, (l, b)
            # mixing: h += V Mcat (all (K̄+1) d inputs)
            href = work0[wb + lay[lo.W_H]:wb + lay[lo.W_H] + d] + V.reshape(-1) @ w["Mcat"][l].T
            h = on[wb + lay[lo.W_H]:wb + lay[lo.W_H] + d].astype(np.float64)
            assert rel_err(h, href) <= 2e-6, (l, b)


def test_engine_past_the_rules_matches_float64_reference():
    """An engine with enough streams that its windows pass numba_config.window_prefetch_min on this machine
    (and, at K >= K̄ - 1, its mixing weights prefetch_bytes' half L2): every step against the float64
    reference, K differing between streams and changing, the ring wrapping."""
    cfg = ESSMConfig(d_in=5, d_out=3, d_model=64, n_layers=2, seq_len=64, k_max=32, d_gate=8)
    per_stream = cfg.n_layers * cfg.seq_len * cfg.d_model * 4
    B = max(2, -(-window_prefetch_min() // per_stream))
    mix_on = (cfg.k_max + 1) * cfg.d_model * cfg.d_model * 4 * cfg.n_layers >= prefetch_bytes()[0]
    prog = tiny_program(cfg, seed=5)
    rng = np.random.default_rng(5)
    T = cfg.seq_len + 10
    X = rng.standard_normal((T, B, cfg.d_in))
    K = rng.integers(1, cfg.k_max + 1, (T, B))
    K[::3, 0] = cfg.k_max
    fast = StreamEngine(prog, batch=B, dtype=np.float32)
    assert fast._lay[lo.GEMM_T] == 1 and fast._lay[lo.HIST_BLK] < B
    assert B * per_stream >= window_prefetch_min()
    ref = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref")
    Y32 = fast.run(X.astype(np.float32), K)
    err = rel_err(Y32.astype(np.float64), ref.run(X, K))
    print(f"B={B} (window prefetch on), mixing prefetch {'on' if mix_on else 'off'} at K̄: max relative error {err:.2e}")
    assert err <= TOL32
