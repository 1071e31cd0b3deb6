"""The B = 1 GEMVs with register-held outputs (essm_stream/gemv.py) and the engines that run them
(layout dim gemv1: float32, one stream, single thread, exact FIR): the kernels against numpy, the
input-major packing against the program's arrays, the engine against the float64 reference at every K
(fp32 and fp16 programs). No timing here (docs/PERFORMANCE.md "Register-held B = 1 GEMVs")."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from essm_stream import gemv
from essm_stream import layout as lo
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
from essm_stream.numba_config import half_widening

TOL32 = 2e-5   # float32 kernel vs float64 reference, relative to max |y_ref| (as tests/test_engine.py)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# n_out: whole chunks (64, 128, 256), a chunk + single vectors + a rest (83, 150, 200), below one vector (3, 10),
# exactly one vector (8, 16), half a chunk (32: the gate's d_gate; 48 = half + a vector; 101 = a chunk, a half
# and a rest); n_in: 0 rows, one, odd and even (the AVX-512 chunks and the half chunk take rows in pairs)
SHAPES = [(64, 64, 64), (320, 64, 64), (7, 64, 64), (64, 128, 128), (128, 64, 64), (33, 83, 90),
          (5, 3, 3), (1, 16, 16), (2, 8, 8), (9, 150, 151), (21, 10, 10), (0, 64, 64),
          (301, 200, 210), (97, 256, 256),   # wider than a chunk: rows in blocks (the last one partial)
          (64, 32, 32), (33, 32, 40), (1, 48, 48), (17, 101, 101)]


def test_fc1_packed_in_column_blocks():
    """gemv1 engines pack fc1.W input-major in column blocks of GEMV_BLOCK outputs (each block's rows back
    to back, the last block narrower: d_hidden = 166 here, blocks of 64, 64, 38); unpack gives fc1.W back,
    and to_blocks / from_blocks are inverses. Without gemv1 (B > 1) fc1.W is not blocked."""
    rng = np.random.default_rng(3)
    for n_in, n_out in ((83, 166), (64, 128), (5, 64), (7, 30), (3, 129)):
        t = rng.standard_normal((2, n_in, n_out))
        flat = lo.to_blocks(t)
        assert flat.shape == (2, n_in * n_out)
        assert np.array_equal(lo.from_blocks(flat, n_in, n_out), t)
        c0 = min(lo.GEMV_BLOCK, n_out)
        assert np.array_equal(flat[:, :n_in * c0].reshape(2, n_in, c0), t[:, :, :c0])   # block 0 first
    prog = tiny_program(CFG, seed=6)
    lay = lo.Layout(CFG, 1, gemv1=True)
    assert lo.blocked_segment("fc1.W", lay.dims) and not lo.blocked_segment("fc2.W", lay.dims)
    W = lay.pack(prog.arrays, np.float32)
    d, dh = CFG.d_model, lay.dims["d_hidden"]
    fc1 = W[lay.off[2 * lo.O_FC1W]:lay.off[2 * lo.O_FC1W] + d * dh]   # layer 0
    T = prog.arrays["fc1.W"][0].T.astype(np.float32)                   # (d, d_hidden) input-major
    for c in range(0, dh, lo.GEMV_BLOCK):
        w = min(lo.GEMV_BLOCK, dh - c)
        assert np.array_equal(fc1[c * d:(c + w) * d].reshape(d, w), T[:, c:c + w]), c
    assert np.array_equal(lay.unpack(W)["fc1.W"], prog.arrays["fc1.W"].astype(np.float32).astype(np.float64))
    assert not lo.blocked_segment("fc1.W", lo.Layout(CFG, 2, gemm_t=True).dims)


@pytest.mark.parametrize("weights", ["fp32", "fp16"])
def test_gemv_t_matches_numpy(weights):
    """out[oo:oo+n_out] += x[xo:xo+n_in] · Wt (rows of ldw from w0), float32 or float16-bit weights,
    against float64 numpy on the same values; the entries of out around the range stay untouched."""
    rng = np.random.default_rng(3)
    for n_in, n_out, ldw in SHAPES:
        x = rng.standard_normal(n_in + 5).astype(np.float32)
        w = rng.standard_normal(max(n_in, 1) * ldw + 7).astype(np.float32)
        Wt = w.astype(np.float16).view(np.uint16) if weights == "fp16" else w
        wv = (Wt.view(np.float16) if weights == "fp16" else Wt).astype(np.float64)
        out = rng.standard_normal(n_out + 9).astype(np.float32)
        got = out.copy()
        gemv.gemv_t_jit(x, 3, Wt, 5, ldw, n_in, n_out, got, 4)
        rows = np.array([wv[5 + m * ldw:5 + m * ldw + n_out] for m in range(n_in)]).reshape(n_in, n_out)
        want = out.astype(np.float64)
        want[4:4 + n_out] += x[3:3 + n_in].astype(np.float64) @ rows
        assert np.array_equal(got[:4], out[:4]) and np.array_equal(got[4 + n_out:], out[4 + n_out:])
        assert rel_err(got.astype(np.float64), want) <= 1e-6, (n_in, n_out, ldw)
        ref = out.copy()
        gemv.gemv_t_ref(x, 3, Wt, 5, ldw, n_in, n_out, ref, 4)   # the numpy twin (NUMBA_DISABLE_JIT)
        assert rel_err(ref.astype(np.float64), want) <= 1e-6


def test_gemv_t_float64_generic_path():
    """float64 operands take the plain compiled loop (no engine runs it; the kernels still type it)."""
    rng = np.random.default_rng(4)
    x, Wt, out = rng.standard_normal(40), rng.standard_normal(40 * 70), rng.standard_normal(70)
    got = out.copy()
    gemv.gemv_t_jit(x, 0, Wt, 0, 70, 40, 70, got, 0)
    assert np.allclose(got, out + x @ Wt.reshape(40, 70), rtol=1e-13, atol=1e-12)


# d = 83: one 64-output chunk, single vectors and a rest of scalar outputs (both vector widths);
# d_hidden = 166 (mlp_ratio 2); K̄ = 5 (Mcat rows (K+1) d up to 498, odd and even)
CFG = ESSMConfig(d_in=5, d_out=3, d_model=83, n_layers=2, seq_len=9, k_max=5, d_gate=6, mlp=True)


@pytest.mark.parametrize("weights,B", [("fp32", 1), ("fp16", 1), ("fp16", 3)])
def test_gemv1_engine_matches_float64_reference_every_budget(weights, B):
    """A B = 1 float32 engine (gemv1: input projection, mixing and MLP by gemv_t from input-major weights) against the
    float64 reference on the same program: every K from 1 to K̄, K changing every step (and between
    streams), the ring wrapping more than twice; the packed (transposed) weights unpack to exactly the
    program's. B = 3 fp16: the mixing on the row-major tiles, the MLP by gemv_t stream by stream."""
    prog = tiny_program(CFG, seed=5)
    if weights == "fp16":
        if not half_widening():
            pytest.skip("no hardware float16 widening for numba's target: fp16 programs mix from float32")
        prog = prog.with_mix_weights("fp16")
    rng = np.random.default_rng(5)
    T = 24
    X = rng.standard_normal((T, B, 5))
    K = rng.integers(1, 6, (T, B))
    K[:5, 0] = np.arange(1, 6)
    fast = StreamEngine(prog, batch=B, dtype=np.float32)
    assert fast.layout.dims["gemv1"] == (B == 1)
    ref = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref")
    Y32 = np.concatenate([fast.run(X[t:t + 1].astype(np.float32), K[t:t + 1]) for t in range(T)])
    err = rel_err(Y32.astype(np.float64), ref.run(X, K))
    print(f"float32 engine ({weights}, B={B}) vs float64 reference: max relative error {err:.2e}")
    assert err <= TOL32
    w = fast.layout.unpack(fast._W)
    for name in ("Mcat", "fc1.W", "fc2.W", "inp.W", "W2"):
        assert np.array_equal(w[name], prog.arrays[name].astype(np.float32).astype(np.float64)), name
        if weights == "fp16" and name in ("Mcat", "fc1.W", "fc2.W"):
            assert np.array_equal(w[name + ".h"], prog.arrays[name]), name


def test_gemv1_engine_gate_scores_in_whole_vectors():
    """K̄ = 21: the gate's W2 product (gemv1) computes K_t rounded up to whole vectors (16 or 8 wide)
    and the rest; the engine against the float64 reference at every K, K changing every step."""
    cfg = ESSMConfig(d_in=4, d_out=2, d_model=64, n_layers=1, seq_len=24, k_max=21, d_gate=16, mlp=True)
    prog = tiny_program(cfg, seed=2)
    rng = np.random.default_rng(2)
    T = 30
    X = rng.standard_normal((T, 1, 4))
    K = rng.integers(1, 22, (T, 1))
    K[:21, 0] = np.arange(1, 22)
    fast = StreamEngine(prog, batch=1, dtype=np.float32)
    assert fast.layout.dims["gemv1"] == 1
    ref = StreamEngine(prog, batch=1, dtype=np.float64, kernel="ref")
    Y32 = np.concatenate([fast.run(X[t:t + 1].astype(np.float32), K[t:t + 1]) for t in range(T)])
    assert rel_err(Y32.astype(np.float64), ref.run(X, K)) <= TOL32


def test_gemv1_only_for_single_stream_float32_single_thread():
    """B > 1, float64 and d > GEMV1_MAX_D engines keep the row-major weights and the tiles."""
    prog = tiny_program(CFG, seed=5)
    assert StreamEngine(prog, batch=2, dtype=np.float32).layout.dims["gemv1"] == 0
    assert StreamEngine(prog, batch=1, dtype=np.float64).layout.dims["gemv1"] == 0
    wide = ESSMConfig(d_in=3, d_out=2, d_model=lo.GEMV1_MAX_D + 8, n_layers=1, seq_len=4, k_max=2, d_gate=3)
    assert lo.Layout(wide, 1, gemv1=True).dims["gemv1"] == 0   # (d > GEMV1_MAX_D: the tiles)
    lay = lo.Layout(CFG, 1, gemv1=True)
    W = lay.pack(prog.arrays, np.float32)
    mc = W[lay.off[2 * lo.O_MCAT]:].reshape(-1)[:83 * 6 * 83].reshape(6 * 83, 83)   # layer 0, input-major
    assert np.array_equal(mc, prog.arrays["Mcat"][0].T.astype(np.float32))


def test_gemv1_engine_with_jit_disabled(tmp_path):
    """The gemv1 engine's Python source (NUMBA_DISABLE_JIT=1: gemv_t is the numpy twin) gives what
    the compiled kernel gives (float32 round-off apart)."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from essm_stream.config import ESSMConfig
        from essm_stream.engine import StreamEngine, tiny_program
        from essm_stream import numba_config
        assert numba_config.JIT_DISABLED
        cfg = ESSMConfig(d_in=2, d_out=2, d_model=19, n_layers=1, seq_len=5, k_max=3, d_gate=3, mlp=True)
        e = StreamEngine(tiny_program(cfg, seed=1), batch=1, dtype=np.float32)
        assert e.layout.dims["gemv1"] == 1
        X = np.random.default_rng(0).standard_normal((7, 1, 2)).astype(np.float32)
        K = np.array([[3], [1], [2], [3], [1], [2], [3]])
        np.save(sys.argv[1], e.run(X, K))
    """)
    out = str(tmp_path / "y.npy")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = ESSMConfig(d_in=2, d_out=2, d_model=19, n_layers=1, seq_len=5, k_max=3, d_gate=3, mlp=True)
    e = StreamEngine(tiny_program(cfg, seed=1), batch=1, dtype=np.float32)
    X = np.random.default_rng(0).standard_normal((7, 1, 2)).astype(np.float32)
    K = np.array([[3], [1], [2], [3], [1], [2], [3]])
    assert rel_err(np.load(out).astype(np.float64), e.run(X, K).astype(np.float64)) <= 1e-5


def test_gemv_stream_equals_gemv_t():
    """gemv_stream (the streamed mixing's chunk: prefetchnta of its rows STREAM_AHEAD bytes ahead) gives
    gemv_t's outputs bit for bit: one chunk of CHUNK outputs over rows back to back, odd and even row
    counts, float32 and float16-bit weights; a prefetch changes no value."""
    rng = np.random.default_rng(5)
    C = gemv.CHUNK
    for weights in ("fp32", "fp16"):
        for n_in in (1, 7, 64, 601):
            x = rng.standard_normal(n_in + 3).astype(np.float32)
            w = rng.standard_normal(n_in * C + 5).astype(np.float32)
            Wt = w.astype(np.float16).view(np.uint16) if weights == "fp16" else w
            out = rng.standard_normal(C + 4).astype(np.float32)
            a, b = out.copy(), out.copy()
            gemv.gemv_t_jit(x, 2, Wt, 5, C, n_in, C, a, 3)
            gemv.gemv_stream_jit(x, 2, Wt, 5, C, n_in, b, 3, gemv.STREAM_AHEAD)
            assert np.array_equal(a, b), (weights, n_in)
