"""The B > 1 mixing and MLP as register-tiled products (layout dim gemm_t: float32, several streams,
single thread, exact FIR): simd.tile_product against numpy, the input-major packing against the
program's arrays, the engine against the float64 reference at every K with K differing between
streams. No timing here (docs/PERFORMANCE.md "The B > 1 mixing and MLP on the register tile")."""
from __future__ import annotations

import numpy as np
import pytest

from essm_stream import layout as lo
from essm_stream import simd
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
from essm_stream.program import StreamProgram
from essm_stream.numba_config import conv_small_rows, half_widening

TOL32 = 2e-5   # float32 kernel vs float64 reference, relative to max |y_ref| (as tests/test_engine.py)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# (rows, n, w): row remainders of the R-row tile, one row (the one-row tile), the narrow tile's
# widths, a strip overlapping the one before, n past one block of τ (TAU_BLOCK) and n = 0
SHAPES = [(4, 64, 64), (5, 70, 64), (7, 33, 2 * simd.HALF_COLS + 3), (1, 40, simd.TILE_COLS),
          (3, simd.TAU_BLOCK + 37, simd.HALF_COLS), (9, 2 * simd.TAU_BLOCK + 1, simd.TILE_COLS + 5),
          (2, 0, simd.HALF_COLS)]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("add", [0, 1])
def test_tile_product_matches_numpy(dt, add):
    """C (+)= s · A · X with A's rows lda > n apart, X's rows ldx > w apart and C's ldc > w apart, at
    offsets inside larger arrays; the entries of C outside the product stay untouched."""
    rng = np.random.default_rng(7 + add)
    for rows, n, w in SHAPES:
        if dt == np.float64 and w < simd.min_cols(np.zeros(1)):
            continue
        if add and not simd.adds_exactly(w, dt == np.float32):   # overlapping strips would add twice: refused
            with pytest.raises(ValueError, match="overlap"):
                z = np.zeros(rows * (w + 2) + 64, dt)
                simd.tile_product(z, 0, 1, z, 0, w, z, 0, w, z, np.int64(-1), rows, 1, w, np.int64(1))
            continue
        lda, ldx, ldc = n + 3, w + 5, w + 2
        A = rng.standard_normal(2 + rows * lda).astype(dt)
        X = rng.standard_normal(4 + max(n, 1) * ldx).astype(dt)
        C = rng.standard_normal(3 + rows * ldc).astype(dt)
        S = rng.standard_normal(rows + 1).astype(dt)
        for s0 in (-1, 1):
            got, want = C.copy(), C.astype(np.float64)
            simd.tile_product(A, 2, lda, X, 4, ldx, got, 3, ldc, S, np.int64(s0), rows, n, w, np.int64(add))
            simd.tile_product_ref(A.astype(np.float64), 2, lda, X.astype(np.float64), 4, ldx, want, 3, ldc,
                                  S.astype(np.float64), s0, rows, n, w, add)
            assert rel_err(got.astype(np.float64), want) <= (2e-6 if dt == np.float32 else 1e-13), (rows, n, w, s0)
            inside = np.zeros(C.size, bool)
            for r in range(rows):
                inside[3 + r * ldc:3 + r * ldc + w] = True
            assert np.array_equal(got[~inside], C[~inside])


# d = 32: the narrow tile under AVX-512 (half a tile), whole tiles under AVX2; d_hidden = 64 (MLP);
# K̄ = 6 (Mcat rows (K+1) d up to 224); L = 9 (the ring wraps)
CFG = ESSMConfig(d_in=5, d_out=3, d_model=max(32, simd.HALF_COLS), n_layers=2, seq_len=9, k_max=6,
                 d_gate=6, mlp=True)


def test_tile_product_widens_float16_weights():
    """X as float16 bits (uint16) beside float32 A and C: the product of the values those bits hold."""
    rng = np.random.default_rng(9)
    for rows, n, w in SHAPES:
        lda, ldx, ldc = n + 1, w + 3, w
        A = rng.standard_normal(rows * lda).astype(np.float32)
        Xh = rng.standard_normal(max(n, 1) * ldx + 2).astype(np.float16)
        C = rng.standard_normal(rows * ldc).astype(np.float32)
        got, want = C.copy(), C.astype(np.float64)
        simd.tile_product(A, 0, lda, Xh.view(np.uint16), 2, ldx, got, 0, ldc, C, np.int64(-1), rows, n, w, np.int64(0))
        simd.tile_product_ref(A.astype(np.float64), 0, lda, Xh.astype(np.float64), 2, ldx, want, 0, ldc,
                              want, -1, rows, n, w, 0)
        assert rel_err(got.astype(np.float64), want) <= 2e-6, (rows, n, w)


@pytest.mark.parametrize("B,weights", [(3, "fp32"), (6, "fp32"), (5, "fp16"), (4, "fp16 Mcat")])
def test_gemm_t_engine_matches_float64_reference_every_budget(B, weights):
    """A float32 engine of B streams (gemm_t: mixing and MLP by tile_product from input-major weights)
    against the float64 reference on the same program: every K from 1 to K̄, K differing between the
    streams and changing every step (the mixing's zero-padding to the frame's max K), the ring wrapping
    more than twice; the packed (transposed) weights unpack to exactly the program's."""
    prog = tiny_program(CFG, seed=6)
    if weights != "fp32":   # (the reference runs the same float16-rounded values in float64)
        if not half_widening():
            pytest.skip("no hardware float16 widening for numba's target: fp16 programs mix from float32")
        if weights == "fp16":
            prog = prog.with_mix_weights("fp16")
        else:   # a first-version fp16 program: Mcat rounded, the MLP in float32 (MODE_FIR_SMALL_H)
            arrays = dict(prog.arrays)
            arrays["Mcat"] = arrays["Mcat"].astype(np.float16).astype(np.float64)
            prog = StreamProgram(prog.cfg, arrays, mix_weights="fp16")
    rng = np.random.default_rng(6)
    T = 26
    X = rng.standard_normal((T, B, CFG.d_in))
    K = rng.integers(1, CFG.k_max + 1, (T, B))
    K[:CFG.k_max, 0] = np.arange(1, CFG.k_max + 1)
    fast = StreamEngine(prog, batch=B, dtype=np.float32)
    assert fast.layout.dims["gemm_t"] == 1 and fast.layout.dims["gemv1"] == 0
    ref = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref")
    Y32 = np.concatenate([fast.run(X[t:t + 1].astype(np.float32), K[t:t + 1]) for t in range(T)])
    err = rel_err(Y32.astype(np.float64), ref.run(X, K))
    print(f"float32 engine (gemm_t, B={B}) vs float64 reference: max relative error {err:.2e}")
    assert err <= TOL32
    w = fast.layout.unpack(fast._W)
    for name in ("Mcat", "fc1.W", "fc2.W", "inp.W", "W1", "W2"):
        assert np.array_equal(w[name], prog.arrays[name].astype(np.float32).astype(np.float64)), name
    if weights != "fp32":
        assert fast.layout.dims["mix16"] == 1 and fast.layout.dims["mlp16"] == (weights == "fp16")
        assert np.array_equal(w["Mcat.h"], prog.arrays["Mcat"])


def test_gemm_t_packs_input_major():
    """Layer 0's Mcat in W is the program's Mcat transposed (row m: input m's weights for every output)."""
    prog = tiny_program(CFG, seed=6)
    lay = lo.Layout(CFG, 4, gemm_t=True)
    assert lay.dims["gemm_t"] == 1
    W = lay.pack(prog.arrays, np.float32)
    d, n = CFG.d_model, (CFG.k_max + 1) * CFG.d_model
    mc = W[lay.off[2 * lo.O_MCAT]:][:n * d].reshape(n, d)
    assert np.array_equal(mc, prog.arrays["Mcat"][0].T.astype(np.float32))
    assert lo.Layout(CFG, 1, gemm_t=True).dims["gemm_t"] == 0      # one stream: gemv1's, not this


def test_gemm_t_only_where_the_tile_applies(monkeypatch):
    """gemm_t: float32, B > 1, one thread, exact FIR, float32 mixing weights, the convolution on the
    tile too, d and d_hidden at least the narrow tile's width and d in whole strips; $ESSM_GEMM_T=0
    switches it off (the 4 × 4 tiles, for measurements)."""
    prog = tiny_program(CFG, seed=6)
    assert StreamEngine(prog, batch=2, dtype=np.float32).layout.dims["gemm_t"] == 1
    assert StreamEngine(prog, batch=1, dtype=np.float32).layout.dims["gemm_t"] == 0
    assert StreamEngine(prog, batch=2, dtype=np.float64).layout.dims["gemm_t"] == 0
    assert StreamEngine(prog, batch=8, dtype=np.float32, threads=2).layout.dims["gemm_t"] == 0
    narrow = ESSMConfig(d_in=3, d_out=2, d_model=simd.HALF_COLS // 2, n_layers=1, seq_len=4, k_max=2, d_gate=3)
    assert StreamEngine(tiny_program(narrow), batch=2, dtype=np.float32).layout.dims["gemm_t"] == 0
    ragged = ESSMConfig(d_in=3, d_out=2, d_model=simd.TILE_COLS + 3, n_layers=1, seq_len=4, k_max=2, d_gate=3)
    assert StreamEngine(tiny_program(ragged), batch=2, dtype=np.float32).layout.dims["gemm_t"] == 0
    monkeypatch.setenv("ESSM_CONV_SMALL_ROWS", "1")   # (BLAS for every convolution product: MODE_FIR, no tile)
    conv_small_rows.cache_clear()
    try:
        assert StreamEngine(prog, batch=2, dtype=np.float32).layout.dims["gemm_t"] == 0
    finally:
        monkeypatch.delenv("ESSM_CONV_SMALL_ROWS")
        conv_small_rows.cache_clear()
    monkeypatch.setenv("ESSM_GEMM_T", "0")
    assert StreamEngine(prog, batch=2, dtype=np.float32).layout.dims["gemm_t"] == 0
