"""The convolution's register-tiled product (essm_stream/simd.py) held to numpy, and the engine on that
path held to the float64 reference kernel.

Tolerances: the product against numpy's float64 product of the same values, relative to the largest
output, 1e-5 for float32 (L ≤ 13 taps) and 1e-12 for float64; the engine as tests/test_engine.py
(float32: max |y − y_ref| ≤ 2e-5 · max |y_ref|; float64 kernel vs the float64 reference kernel: 1e-12).
The tile shape is the one numba compiles for here (numba_config.conv_tile); the other machine kind's
shape runs in a subprocess with ESSM_CONV_TILE (any shape runs on any x86: LLVM splits wider vectors).
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from essm_stream import numba_config, simd
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _check_product(rng, dt, L, w, rows, s0, ldc_pad=3):
    """conv_product at offsets inside larger arrays, C rows ldc = w + ldc_pad apart: the product's
    values in C, nothing else written (NaN before, between and after the rows)."""
    F = rng.standard_normal(3 + rows * L).astype(dt)
    X = rng.standard_normal(5 + L * w + 2).astype(dt)
    S = rng.standard_normal(4 + rows).astype(dt)
    ldc = w + ldc_pad
    C = np.full(7 + rows * ldc + 4, np.nan, dt)
    simd.conv_product(F, 3, L, X, 5, w, C, 7, ldc, S, s0, rows)
    want = np.full_like(C, np.nan, dtype=np.float64)
    simd.conv_product_ref(F.astype(np.float64), 3, L, X.astype(np.float64), 5, w, want, 7, ldc,
                          S.astype(np.float64), s0, rows)
    written = ~np.isnan(want)
    assert np.array_equal(np.isnan(C), ~written), (dt, L, w, rows, s0)
    err = np.max(np.abs(C[written] - want[written])) / np.max(np.abs(want[written]))
    assert err <= TOL[dt], (dt, L, w, rows, s0, err)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("L", [1, 12, 13])
def test_conv_product_matches_numpy(dt, L):
    """Every row count 1 … 33 (R-row tiles, the last one with its last row repeated, fewer rows than a
    tile, the one-row tile with its odd/even τ split), windows one tile wide, several tiles, widths
    that are no multiple of the tile (the overlapping last columns) and narrower than a tile (the
    narrow tile); scaled (α) and unscaled stores. A window narrower than the narrow tile is refused
    (the engine sends it to BLAS)."""
    rng = np.random.default_rng(L)
    tw = simd.TILE_COLS if dt == np.float32 else simd.TILE_COLS // 2
    th = simd.HALF_COLS if dt == np.float32 else simd.HALF_COLS // 2
    for w in sorted({th, th + 3, tw, tw + 4, 2 * tw, 100}):
        for rows in range(1, 34):
            _check_product(rng, dt, L, w, rows, s0=-1 if rows % 2 else 2)
    if not numba_config.JIT_DISABLED:   # (then conv_product is numpy's product, for any width)
        with pytest.raises(ValueError, match="narrower than the narrow tile"):
            _check_product(rng, dt, L, th - 1, 4, s0=-1)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_conv_product_long_window_in_blocks_of_tau(dt):
    """A window longer than a block of τ (simd.TAU_BLOCK): C accumulated across blocks, scaled with
    the last; a few row counts (the last row tile with its last row repeated) and widths."""
    rng = np.random.default_rng(7)
    L = 2 * simd.TAU_BLOCK + 45
    tw = simd.TILE_COLS if dt == np.float32 else simd.TILE_COLS // 2
    for w in (tw // 2 if simd.TILE_VECS > 1 else tw, tw, tw + 4):
        for rows in (1, 2, 5, 9):
            _check_product(rng, dt, L, w, rows, s0=-1 if rows % 2 else 2)


def test_conv_tile_shape_follows_numba_target(monkeypatch):
    """The tile's shape comes from the ISA numba compiles for (its CPU name / features), and
    ESSM_CONV_TILE overrides it (a bad value is refused)."""
    import platform

    from numba.core import config
    if platform.machine().lower() in ("x86_64", "amd64"):
        for name, feats, want in (("haswell", "", (32, 16)), ("skylake-avx512", "", (64, 32)),
                                  ("generic", "", (16, 16)), ("host", "+avx,+avx2,+fma", (32, 16)),
                                  ("host", "+avx512f,+avx", (64, 32))):
            monkeypatch.setattr(config, "CPU_NAME", name)
            monkeypatch.setattr(config, "CPU_FEATURES", feats)
            assert numba_config.simd_target() == want, (name, feats)
        monkeypatch.setattr(config, "CPU_NAME", "haswell")
        monkeypatch.setattr(config, "CPU_FEATURES", "")
        monkeypatch.delenv("ESSM_CONV_TILE", raising=False)
        assert numba_config.conv_tile() == (6, 2, 8)
    monkeypatch.setenv("ESSM_CONV_TILE", "4x2x8")
    assert numba_config.conv_tile() == (4, 2, 8)
    for bad in ("6x2", "0x2x8", "4x2x7", "ax2x8"):
        monkeypatch.setenv("ESSM_CONV_TILE", bad)
        with pytest.raises(ValueError, match="ESSM_CONV_TILE"):
            numba_config.conv_tile()


@pytest.mark.slow
def test_other_tile_shape_matches_numpy(tmp_path):
    """The tile shape of the other machine kind (AVX2's 6 × 2 × 8 where numba targets AVX-512, else
    AVX-512's 4 × 4 × 16) in a subprocess with its own cache: the same checks, float32 and float64."""
    other = "6x2x8" if simd.TILE_COLS == 64 else "4x4x16"
    code = textwrap.dedent("""
        import numpy as np
        from essm_stream import simd
        import test_simd_conv as t
        assert (simd.TILE_ROWS, simd.TILE_VECS, simd.TILE_LANES) == tuple(int(x) for x in "%s".split("x"))
        rng = np.random.default_rng(0)
        for dt in (np.float32, np.float64):
            tw = simd.TILE_COLS if dt == np.float32 else simd.TILE_COLS // 2
            for L in (1, 13):
                th = simd.HALF_COLS if dt == np.float32 else simd.HALF_COLS // 2
                for w in sorted({th, th + 3, tw, tw + 4, 100}):
                    for rows in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 32, 33):
                        t._check_product(rng, dt, L, w, rows, s0=-1 if rows %% 2 else 2)
        print("ok")
    """ % other)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), ESSM_CONV_TILE=other,
               PYTHONPATH=os.pathsep.join([here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


@pytest.fixture(params=["tile", "tile-up-to-3-rows"])
def tile_rows(request, monkeypatch):
    """The default choice (the tile for every product of these small windows) and the tile for up to 3
    rows with sgemm above (numba_config.conv_small_rows)."""
    if request.param == "tile":
        monkeypatch.delenv("ESSM_CONV_SMALL_ROWS", raising=False)
    else:
        monkeypatch.setenv("ESSM_CONV_SMALL_ROWS", "3")
    numba_config.conv_small_rows.cache_clear()
    yield request.param
    numba_config.conv_small_rows.cache_clear()


def _budgets(rng, T, B, k_max):
    K = rng.integers(1, k_max + 1, (T, B))
    K[:k_max, 0] = np.arange(1, k_max + 1)           # every budget, K changing every step
    if B > 1:
        K[k_max:2 * k_max, :] = K[k_max:2 * k_max, :1]   # all streams at the frame's K_t (V stored directly)
    return K


@pytest.mark.parametrize("d,B", [(80, 1), (80, 3), (32, 1), (32, 3), (32, 6), (12, 7)])
def test_engine_on_tile_matches_float64_reference(d, B, tile_rows):
    """The float32 engine on the register tile against the float64 numpy reference kernel: every K from
    1 to K̄ at some step, K changing per step and per stream, 2.5 windows (the ring wraps twice), an odd
    L. d = 80: one stream per history block (B = 1 and equal budgets: the product stored straight into
    V × α; 80 columns, no multiple of a tile); d = 32: two streams per block (the product into the
    batch scratch, then V), B = 3 with a narrower last block (BLAS's where it is narrower than a
    tile); d = 12: five streams per block, 60 columns (a tile natively only for the float64 engine)."""
    cfg = ESSMConfig(d_in=5, d_out=3, d_model=d, n_layers=2, seq_len=9, k_max=7, d_gate=5)
    prog = tiny_program(cfg, seed=d + B)
    rng = np.random.default_rng(d + B)
    T = 23
    X = rng.standard_normal((T, B, 5))
    K = _budgets(rng, T, B, cfg.k_max)
    fast = StreamEngine(prog, batch=B, dtype=np.float32)
    assert fast.layout.dims["conv_small"] == (3 if tile_rows != "tile" else cfg.k_max)
    ref = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref")
    Y32 = np.concatenate([fast.run(X[t:t + 1].astype(np.float32), K[t:t + 1]) for t in range(T)])
    Y64 = ref.run(X, K)
    err = float(np.max(np.abs(Y32 - Y64)) / np.max(np.abs(Y64)))
    assert err <= 2e-5, err
    assert np.allclose(fast.snapshot().hist, ref.snapshot().hist, rtol=0, atol=1e-5)


def test_float64_engine_on_tile_matches_reference_kernel():
    """A float64 engine runs the same tile with vectors of doubles: equal to the reference kernel."""
    numba_config.conv_small_rows.cache_clear()
    cfg = ESSMConfig(d_in=5, d_out=3, d_model=32, n_layers=2, seq_len=10, k_max=6, d_gate=5)
    prog = tiny_program(cfg, seed=3)
    rng = np.random.default_rng(3)
    B, T = 3, 25
    X = rng.standard_normal((T, B, 5))
    K = _budgets(rng, T, B, cfg.k_max)
    fast = StreamEngine(prog, batch=B, dtype=np.float64)
    assert fast.layout.dims["conv_small"] > 1 or os.environ.get("ESSM_CONV_SMALL_ROWS")
    y = fast.run(X, K)
    yr = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref").run(X, K)
    assert float(np.max(np.abs(y - yr)) / np.max(np.abs(yr))) <= 1e-12


def _same_as_tile_product(product, rng, L, w, rows):
    """A one-strip-kind product (narrow_product_pf, pair_product_pf) against tile_product_pf as
    conv_product_pf calls it, on random float32 operands at offsets that are no multiple of a vector:
    the same values bit for bit unscaled, scaled (s0 = 2), and scaled with a prefetch region, which
    changes no value. Returns the operands and the scaled output."""
    z = 0
    F = rng.standard_normal(3 + rows * L + 2048).astype(np.float32)   # (room for the region)
    X = rng.standard_normal(5 + L * w).astype(np.float32)
    S = rng.standard_normal(2 + rows).astype(np.float32)
    ldc = w + 3
    plain = None
    for s0, region in ((-1, (z, z, z, z)), (2, (z, z, z, z)), (2, (64, 256, 3, 512))):
        want = np.full(7 + rows * ldc, np.nan, np.float32)
        got = want.copy()
        simd.tile_product_pf(F, 3, L, X, 5, w, want, 7, ldc, S, s0, rows, L, w, z, *region)
        product(F, 3, L, X, 5, w, got, 7, ldc, S, s0, rows, *region)
        assert np.array_equal(got, want, equal_nan=True), (L, w, rows, s0, region)
        if s0 == 2 and plain is None:
            plain = got
    assert np.array_equal(got, plain, equal_nan=True), (L, w, rows)   # the prefetch changed nothing
    return F, X, S, ldc, got


def test_narrow_product_is_the_products_narrow_path_bit_for_bit():
    """simd.narrow_product_pf (the convolution of kernels.stream_run_fir_one_narrow) against tile_product_pf
    as conv_product_pf calls it, on windows narrower than a tile (one strip; two overlapping ones): the
    same float32 values bit for bit, for 1 … 9 rows (R-row tiles and a partial one), a short window and
    one longer than a block of τ, scaled and unscaled, with and without a prefetch region (a prefetch
    changes no value). A window a tile wide is refused (it is tile_product_pf's)."""
    rng = np.random.default_rng(11)
    th, tw = simd.HALF_COLS, simd.TILE_COLS
    if th == tw or numba_config.JIT_DISABLED:
        pytest.skip("a one-vector tile has no narrow tile; NUMBA_DISABLE_JIT: both are numpy's product")
    z = 0
    for L in (13, simd.TAU_BLOCK + 7):
        for w in sorted({th, min(th + 3, tw - 1), tw - 1}):
            for rows in (1, 2, 4, 5, 9):
                _same_as_tile_product(simd.narrow_product_pf, rng, L, w, rows)
    C = np.zeros(tw + 8, np.float32)
    with pytest.raises(ValueError, match="narrower than a tile"):
        simd.narrow_product_pf(np.ones(8, np.float32), 0, 4, np.ones(4 * tw, np.float32), 0, tw, C, 0, tw,
                               C, -1, 1, z, z, z, z)


def test_row_tiles_cover_the_rows(monkeypatch):
    """simd.row_tile's rule (the last rows of a product in TILE_ROWS2-row tiles where the tile has more rows,
    AVX2's 6 × 2 × 8): the tiles cover every row count once with no more rows computed than R-row tiles
    alone, K = 4 one 4-row tile, K = 32 four 6-row and two 4-row tiles; with R = 4 (AVX-512) every tile
    is an R-row one. The rule in Python (py_func) with the tile heights patched in."""
    for R, R2 in ((6, 4), (4, 4), (5, 4)):
        monkeypatch.setattr(simd, "TILE_ROWS", R)
        monkeypatch.setattr(simd, "TILE_ROWS2", R2)
        monkeypatch.setattr(simd, "row_tile", getattr(simd.row_tile, "py_func", simd.row_tile))
        rt = simd.row_tile
        small = getattr(simd.small_rows, "py_func", simd.small_rows)
        for rows in range(1, 70):
            r, hs = 0, []
            while r < rows:
                hs.append(rt(rows - r))
                r += hs[-1]
            assert sum(hs) - rows < R, (R, rows, hs)                     # only the last tile repeats rows
            assert sum(hs) <= -(-rows // R) * R, (R, rows, hs)           # never more than R-row tiles alone
            assert all(h == R for h in hs[:len(hs) - sum(h != R for h in hs)])   # the R-row tiles first
            assert small(rows) == max(0, rows - R * sum(h == R for h in hs)), (R, rows)   # rows left to them
            if R2 == R:
                assert hs == [R] * -(-rows // R)
        if R == 6:
            assert [rt(4)] == [4] and [rt(32 - 6 * i) for i in range(4)] == [6] * 4 and small(32) == 8


def test_pair_product_is_the_products_whole_tile_path_bit_for_bit():
    """simd.pair_product_pf (the convolution of kernels.stream_run_fir_one_narrow with AVX2's 16-column tile,
    the demo's d = 32) against tile_product_pf as conv_product_pf calls it, on windows more than one and at
    most two tiles wide (two strips, overlapping where w is no multiple; with AVX2 also w = 24, where
    tile_product_pf runs the wider small tile for 2 … 4 rows): the same float32 values bit for bit, for 1 …
    2 R + 3 rows (R-row tiles, the last rows' smaller ones, the one-row tile), a short window and one
    longer than a block of τ (odd and even: the one-row tile takes τ in pairs), scaled and unscaled, with
    and without a prefetch region; and within 1e-5 of the float64 product (conv_product_ref). Windows of one
    tile or more than two are refused."""
    if numba_config.JIT_DISABLED:
        pytest.skip("NUMBA_DISABLE_JIT: both are numpy's product")
    rng = np.random.default_rng(12)
    tw = simd.TILE_COLS
    ww = tw // simd.TILE_VECS * (simd.TILE_VECS + 1)   # (the wider small tile's strip, where WIDE_SMALL)
    z = 0
    for L in (13, simd.TAU_BLOCK + 8):
        for w in sorted({tw + 1, tw + 5, ww, 2 * tw - 1, 2 * tw} & set(range(tw + 1, 2 * tw + 1))):
            for rows in sorted({1, 2, 3, 4, 5, simd.TILE_ROWS, simd.TILE_ROWS + 1, 2 * simd.TILE_ROWS + 2,
                                2 * simd.TILE_ROWS + 3}):
                F, X, S, ldc, got = _same_as_tile_product(simd.pair_product_pf, rng, L, w, rows)
                ref = np.full(7 + rows * ldc, np.nan)
                simd.conv_product_ref(F.astype(np.float64), 3, L, X.astype(np.float64), 5, w, ref, 7, ldc,
                                      S.astype(np.float64), 2, rows)
                scale = np.nanmax(np.abs(ref))
                assert np.nanmax(np.abs(got - ref)) <= TOL[np.float32] * scale, (L, w, rows)
                assert np.array_equal(np.isnan(got), np.isnan(ref)), (L, w, rows)   # (only C's rows written)
    C = np.zeros(4 * tw + 8, np.float32)
    for w in (tw, 2 * tw + 1):
        with pytest.raises(ValueError, match="at most two tiles"):
            simd.pair_product_pf(np.ones(8, np.float32), 0, 4, np.ones(4 * w, np.float32), 0, w, C, 0, w,
                                 C, -1, 1, z, z, z, z)
