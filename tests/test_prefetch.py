"""The convolution's software prefetch of the mixing weights (simd.conv_product_pf, numba_config.prefetch,
kernels._mix_region / _prefetch_pays): a prefetch changes no value, so engines compiled with and
without it give the same outputs bit for bit (float32 engines of one stream, the wide and the narrow
tile, budgets changing every frame; where the rule lets it run and where not); the tiles' share of the region
covers it in order; $ESSM_PREFETCH is read and checked, and keys the kernel cache. No timing here
(docs/PERFORMANCE.md "Prefetching the mixing weights during the convolution")."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from essm_stream import numba_config, simd

# the engines both sides run: (d_model, n_layers, B, weights, dtype). d = 64, B = 1, float32: the
# input-major Mcat (one run of bytes); d = 32, B = 1: the narrow tile. K̄ = 32 and enough layers that
# the step's mixing weights exceed half this machine's L2 at the larger budgets (_layers;
# kernels._prefetch_pays: the prefetch runs there, not at the smaller ones). Not run: B > 1 and fp16 programs, where _prefetch_pays
# keeps it off (its rule is checked below); each would be another kernel to compile cold in the
# subprocess (≈ 8 s of the suite). Not compared across processes: float64 engines (Mcat's rows, d runs
# of the active prefix). A float64 kernel loaded from numba's disk cache gives outputs an ulp or two off
# the same kernel compiled in the process (docs/ENGINE.md "The kernel cache"), and pytest-xdist's
# workers share that cache, so the comparison would test numba's cache, not the prefetch; the float64
# rule is checked below, its values against the reference in tests/test_engine.py.


def _layers(d: int, k: int = 24) -> int:
    """Layers enough that the step's input-major float32 Mcat at budget k reaches the rule's least bytes
    (numba_config.prefetch_bytes()[0], half the L2): 2 (d = 64) and 6 (d = 32) with a 1 MB L2, 3 and 11
    with a 2 MB one (the prefetch would otherwise not run at K = 24 there, and the test check nothing)."""
    return -(-numba_config.prefetch_bytes()[0] // ((k + 1) * d * d * 4))


CASES = [(64, _layers(64), 1, "fp32", "float32"), (32, _layers(32), 1, "fp32", "float32")]
PREFETCHES = set(CASES)

RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    from essm_stream.config import ESSMConfig
    from essm_stream.engine import StreamEngine, tiny_program
    from essm_stream import simd

    def outputs(cases, check=None):
        res = []
        for d, nl, B, weights, dtype in cases:
            cfg = ESSMConfig(d_in=5, d_out=3, d_model=d, n_layers=nl, seq_len=32, k_max=32, d_gate=5)
            prog = tiny_program(cfg, seed=d + B)
            if weights == "fp16":
                prog = prog.with_mix_weights("fp16")
            eng = StreamEngine(prog, batch=B, dtype=np.dtype(dtype))
            rng = np.random.default_rng(d * 10 + B)
            T = 2 * cfg.seq_len + 3                       # across the ring's wrap-around
            X = rng.standard_normal((T, B, cfg.d_in)).astype(dtype)
            Ks = rng.integers(1, cfg.k_max + 1, size=(T, B))
            Ks[T // 2:] = np.maximum(Ks[T // 2:], 24)     # (the second half: budgets the prefetch runs at)
            Ks[::4] = cfg.k_max                           # the largest budget too, and B > 1 frames
            Y = eng.run(X, Ks) if B > 1 else eng.run(X[:, 0], Ks[:, 0])   # (B > 1 frames with one budget:
            #                                                               the direct store into V)
            ys = [eng.step(X[t] if B > 1 else X[t, 0], int(Ks[t, 0])) for t in range(4)]
            if check is not None:                         # (does it prefetch at K = 24, and not at K = 1?)
                from essm_stream import kernels
                for K, want in ((24, (d, nl, B, weights, dtype) in check), (1, False)):
                    _, prow, pn, _ = kernels._mix_region(eng._W, eng._off, eng._lay, 0, K)
                    assert kernels._prefetch_pays(eng._lay, B, prow, pn) == want, (d, nl, B, weights, dtype, K)
            res.append(np.concatenate([np.ravel(Y)] + [np.ravel(y) for y in ys]).astype(np.float64).tolist())
        return res
""")


def _run_here(cases):
    ns: dict = {}
    exec(RUN, ns)
    return ns["outputs"](cases, check=PREFETCHES)


def test_prefetch_changes_no_output_bit():
    """The default build (PF_LINES prefetches a step of τ) and ESSM_PREFETCH=0 (no prefetch
    instruction compiled), each engine of CASES: identical outputs, bit for bit."""
    assert simd.PF_LINES > 0 or os.environ.get("ESSM_PREFETCH"), "the default build prefetches"
    code = RUN + "\nprint(json.dumps(outputs(json.loads(sys.argv[1]))))\n"
    env = dict(os.environ, ESSM_PREFETCH="0")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(CASES)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    off = json.loads(r.stdout.strip().splitlines()[-1])
    on = _run_here([tuple(c) for c in CASES])
    for case, a, b in zip(CASES, on, off):
        a, b = np.array(a), np.array(b)
        assert np.all(np.isfinite(a)), case
        assert np.array_equal(a, b), (case, float(np.max(np.abs(a - b))))


def _tiles(L, rows, w, n_tau):
    """The τ-step counts of conv_product_pf's tile calls, in order (as its loops make them)."""
    R, tw = simd.TILE_ROWS, simd.TILE_COLS
    strips = 1 if w <= tw else -(-w // tw)
    if simd.WIDE_SMALL and 1 < rows <= simd.TILE_ROWS2 and w >= tw:   # (AVX2: the wider small tile's strips)
        ww, strips, j = tw // simd.TILE_VECS * (simd.TILE_VECS + 1), 0, 0
        while j < w:
            j += ww if (w - j == ww or w - j >= ww + tw) else tw
            strips += 1
    out = []
    for _ in range(strips):
        t0 = 0
        while t0 < L:
            n = min(n_tau, L - t0)
            out += [n - n % 2] if rows == 1 else [n] * simd.row_tiles(rows)
            t0 += n
    return out


@pytest.mark.parametrize("p0,prow,pn,pld,L,rows,w", [
    (4096, 33 * 64 * 64 * 4, 1, 0, 128, 32, 64),       # edge B=1 K=32: one run, more than the tiles' share
    (4096, 5 * 64 * 64 * 4, 1, 0, 128, 4, 64),          # K=4: one run, less than the share
    (1000, 33 * 256 * 4, 256, 33 * 256 * 4, 1024, 32, 256),   # paper K=32: d rows, back to back
    (1000, 9 * 256 * 4, 256, 33 * 256 * 4, 1024, 8, 256),     # paper K=8: rows with gaps
    (64, 5 * 64 * 2, 64, 33 * 64 * 2, 12, 5, 64),       # fp16 rows, short window
    (64, 200, 3, 1000, 13, 1, 100),                     # one filter row (τ in pairs)
])
def test_tiles_share_the_region_in_order(p0, prow, pn, pld, L, rows, w):
    """_pf_next, called as conv_product_pf calls it: the tiles' prefetches (lines pa + τ ps + i 64,
    i < PF_LINES, τ < n) cover the region's rows in order from the first byte, never skip a byte up to
    where they stop, never point before the region or more than a few lines past a row's end, and stop
    only when the region is done or the tiles' PF_LINES lines a step are spent."""
    if simd.PF_LINES == 0:
        pytest.skip("built with ESSM_PREFETCH=0")
    PF, LN = simd.PF_LINES, simd.LINE
    f = 7   # (a spent region's tiles prefetch the filters: byte f)
    if pld == prow:   # (conv_product_pf joins rows that lie back to back into one run)
        prow, pn = prow * pn, 1
    r, c = 0, 0
    pos = (0, 0)      # the row and byte the next tile must start at
    tiles = _tiles(L, rows, w, simd.TAU_BLOCK)
    rate = min(PF * LN, -(-pn * prow // sum(tiles)))   # (bytes a step: the region spread over the product)
    for n in tiles:
        r0 = r
        pa, ps, r, c = simd._pf_next(p0, prow, pn, pld, r, c, f, n, rate)
        if r0 >= pn:
            assert (pa, ps) == (f, 0)   # a spent region: nothing more fetched
            continue
        row_start = p0 + r0 * pld
        assert (r0, pa - row_start) == pos, (r0, pa - row_start, pos)   # in order, nothing skipped
        assert 0 < ps <= rate <= PF * LN         # consecutive steps' lines overlap or touch: no gap
        end = pa + (n - 1) * ps + PF * LN        # the last τ's lines end here
        cap = rate * n
        rest = row_start + prow - pa
        if rest > cap:                           # a full share, the row goes on in the next tile
            assert ps == rate and (r, c) == (r0, pa - row_start + cap)
        else:                                    # the rest of the row, no further than a share's lines
            # (ps is the rest spread over n steps, rounded up: the last τ may start up to n - 1 bytes later;
            #  seen under the AVX2 tile's 16-column strips, where a step's share is a few bytes)
            assert row_start + prow <= end <= row_start + prow + PF * LN + n - 1 and (r, c) == (r0 + 1, 0)
        pos = (r, c)
    assert pos[0] == pn or r0 < pn   # the region done, or the last tile had a share (none idle before)


def test_prefetch_setting_is_read_and_checked(monkeypatch):
    """$ESSM_PREFETCH: N (lines per step of τ, the default hint) or N,HINT; 0 turns it off; bad values
    are refused naming the variable; a setting keys the kernel cache (other machine code)."""
    f = numba_config.prefetch
    try:
        monkeypatch.delenv("ESSM_PREFETCH", raising=False)
        f.cache_clear()
        assert f() == numba_config.prefetch_default()
        key0 = numba_config.kernel_source_key()
        for env, want in (("0", (0, numba_config.prefetch_default()[1])), ("3", (3, numba_config.prefetch_default()[1])),
                          ("4,1", (4, 1)), ("8,0", (8, 0))):
            monkeypatch.setenv("ESSM_PREFETCH", env)
            f.cache_clear()
            assert f() == want, env
            assert numba_config.kernel_source_key() != key0
        for bad in ("x", "9", "-1", "2,4", "1,2,3", "2;1"):
            monkeypatch.setenv("ESSM_PREFETCH", bad)
            f.cache_clear()
            with pytest.raises(ValueError, match="ESSM_PREFETCH"):
                f()
    finally:
        monkeypatch.delenv("ESSM_PREFETCH", raising=False)
        f.cache_clear()
    code = "from essm_stream import simd; print(simd.PF_LINES, simd.PF_HINT)"
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, ESSM_PREFETCH="5,3"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["5", "3"]


def test_no_prefetch_for_several_streams_or_fp16_weights():
    """_prefetch_pays keeps it off where it measured slower: a step of several history blocks (B = 3,
    d = 64) and an fp16 program's half-width Mcat, at a budget where the B = 1 float32 and float64
    engines prefetch."""
    from essm_stream import kernels
    from essm_stream.config import ESSMConfig
    from essm_stream.engine import StreamEngine, tiny_program
    # six layers: 2.4 MB of mixing weights at K = 24, more than half of any L2 up to 4 MB (the rule's
    # first condition holds wherever CI runs)
    cfg = ESSMConfig(d_in=5, d_out=3, d_model=64, n_layers=6, seq_len=32, k_max=32, d_gate=5)
    prog = tiny_program(cfg, seed=1)
    engines = [(StreamEngine(prog, batch=1, dtype=np.float32), 1, True),
               (StreamEngine(prog, batch=1, dtype=np.float64), 1, True),    # (Mcat's rows: d runs)
               (StreamEngine(prog, batch=3, dtype=np.float32), 3, False)]
    if numba_config.half_widening():
        engines.append((StreamEngine(prog.with_mix_weights("fp16"), batch=1, dtype=np.float32), 1, False))
    for eng, B, want in engines:
        _, prow, pn, _ = kernels._mix_region(eng._W, eng._off, eng._lay, 0, 24)
        assert kernels._prefetch_pays(eng._lay, B, prow, pn) == want, (B, eng.layout.dims["mix16"])
