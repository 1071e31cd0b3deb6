"""The streaming engine held to the numpy reference forward (torch-free), to the torch model
(float64, when torch is installed) and to its plain numpy reference kernel.

Tolerances (relative to the output's max magnitude): float64 <= 1e-9 (measured ~1e-15);
float32 <= 2e-5 (measured ~3e-7; float32 accumulation over L taps and (K̄+1)d-long mixes).
Chunked input equals per-step input bit for bit; snapshot/restore and reset are exact.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
from essm_stream.errors import BudgetError, ConfigError, NonFiniteInputError, ShapeError
from essm_stream import kernels
from programs import numpy_program, reference_out

try:
    import torch
except ImportError:     # runtime-only install: the torch comparisons skip, everything else runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs the [train] extra (torch)")

BUDGETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
TOL = {np.float64: 1e-9, np.float32: 2e-5}


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def make_model(cfg, seed=0):
    """A float64 model with random orthonormal filters and decaying σ (speed and exactness do not
    depend on the filters being the Hankel ones; this keeps the test independent of hankel.py)."""
    from essm_stream.model import ESSMModel
    torch.manual_seed(seed)
    m = ESSMModel(cfg, init_filters=False).double()
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((cfg.seq_len, cfg.k_max)))
    sig = np.logspace(0, -12, cfg.k_max)
    with torch.no_grad():
        for blk in m.blocks:
            blk.essm.phi.copy_(torch.from_numpy(q))
            blk.essm.sigma.copy_(torch.from_numpy(sig))
            if blk.essm.gated:
                blk.essm.b1.normal_()
                blk.essm.b2.normal_()
            lns = [blk.ln1] + ([blk.ln2] if blk.has_mlp else [])
            for ln in lns:
                ln.weight.normal_(1.0, 0.1)
                ln.bias.normal_(0.0, 0.1)
    return m.eval()


CFG = ESSMConfig(d_in=3, d_out=4, d_model=8, n_layers=2, seq_len=32, k_max=32, d_gate=8)


@pytest.fixture(scope="module")
def model():
    if torch is None:
        pytest.skip("needs the [train] extra (torch)")
    return make_model(CFG)


@pytest.fixture(scope="module")
def tprog(model):
    from essm_stream.compile import compile_model
    return compile_model(model)


@pytest.fixture(scope="module")
def prog():
    """A program of CFG built without torch (tests/programs.py)."""
    return numpy_program(CFG, seed=0)[0]


SMALL = ESSMConfig(d_in=3, d_out=2, d_model=6, n_layers=2, seq_len=12, k_max=8, d_gate=5)


@pytest.fixture(scope="module")
def small_reference():
    """SMALL's program, inputs, budgets (ints, a per-step schedule that jumps, per-stream) and the
    numpy reference outputs, computed once for both dtypes."""
    prog, w = numpy_program(SMALL, seed=1)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((16, 2, 3))
    sched = np.array([8, 1, 1, 8, 3, 5, 2, 8, 1, 4, 8, 8, 1, 2, 3, 8])
    budgets = [1, 8, sched, rng.integers(1, 9, (16, 2))]
    return prog, X, [(K, reference_out(w, SMALL, X, K)) for K in budgets]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_engine_matches_numpy_reference_forward(small_reference, dtype):
    """Torch-free: the engine against reference.model_ref on the same weights, T > L, several K,
    a per-step schedule that jumps, and per-stream budgets."""
    prog, X, cases = small_reference
    for K, ref in cases:
        got = StreamEngine(prog, batch=2, dtype=dtype).run(X.astype(dtype), K)
        err = rel_err(got, ref)
        assert err <= TOL[dtype], f"K={K!r:.40}: relative error {err:.2e} > {TOL[dtype]}"


@pytest.mark.parametrize("variant,mlp,head", [("base", True, "step"), ("gate_only", False, "mean"),
                                              ("dropout_only", True, "mean")])
def test_variants_match_numpy_reference(variant, mlp, head):
    cfg = ESSMConfig(d_in=2, d_out=3, d_model=4, n_layers=2, seq_len=8, k_max=4, d_gate=3,
                     variant=variant, mlp=mlp, head=head, pool_window=3)
    prog, w = numpy_program(cfg, seed=2)
    X = np.random.default_rng(2).standard_normal((14, 1, 2))
    K = np.array([4, 1, 3, 4, 2] * 2 + [1, 1, 4, 2])
    err = rel_err(StreamEngine(prog, dtype=np.float64).run(X, K), reference_out(w, cfg, X, K))
    assert err <= 1e-9, f"{variant} mlp={mlp} head={head}: {err:.2e}"


def engine_out(prog, x, K, dtype):  # torch tests only
    """x (B, T, d_in) float64 torch -> engine output (B, T, d_out), K as model(x, K) takes it."""
    B = x.shape[0]
    eng = StreamEngine(prog, batch=B, dtype=dtype)
    X = np.ascontiguousarray(x.numpy().transpose(1, 0, 2)).astype(dtype)
    if isinstance(K, torch.Tensor):
        K = K.numpy().T if K.dim() == 2 else K.numpy()
    return eng.run(X, K).transpose(1, 0, 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T", [20, 32, 45])   # T < L, T = L, T > L (sliding window)
def test_engine_matches_model_every_budget(model, tprog, dtype, T):
    x = torch.randn(2, T, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(T))
    worst = 0.0
    for K in BUDGETS:
        y = model(x, K).detach().numpy()
        err = rel_err(engine_out(tprog, x, K, dtype), y)
        worst = max(worst, err)
        assert err <= TOL[dtype], f"{np.dtype(dtype).name} T={T} K={K}: relative error {err:.2e} > {TOL[dtype]}"
    print(f"{np.dtype(dtype).name} T={T}: max relative error over K {worst:.2e}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_budget_schedules_jump_up_and_down(model, tprog, dtype):
    T = 70
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, T, 3, dtype=torch.float64, generator=g)
    # full budget, then 1 for longer than L (channels off), then back up: re-activated channels exact
    per_step = torch.tensor([32] * 10 + [1] * 36 + [32, 2, 24, 4, 16, 3, 12, 6, 8, 32] + [5, 31] * 7)
    per_stream = torch.randint(1, 33, (3, T), generator=g)                 # (B, T): each stream its own
    for K in (per_step, per_stream):
        err = rel_err(engine_out(tprog, x, K, dtype), model(x, K).detach().numpy())
        assert err <= TOL[dtype], f"schedule of shape {tuple(K.shape)}: relative error {err:.2e}"


@pytest.mark.parametrize("variant,mlp,head", [("base", True, "step"), ("gate_only", False, "mean"),
                                              ("dropout_only", True, "mean"), ("essm", False, "step")])
@needs_torch
def test_variants_and_heads(variant, mlp, head):
    from essm_stream.compile import compile_model
    cfg = ESSMConfig(d_in=2, d_out=3, d_model=8, n_layers=2, seq_len=16, k_max=8, d_gate=4,
                     variant=variant, mlp=mlp, head=head, pool_window=5)
    m = make_model(cfg, seed=3)
    prog = compile_model(m)
    x = torch.randn(2, 30, 2, dtype=torch.float64)
    K = torch.tensor([8, 1, 3, 8, 2] * 6)
    err = rel_err(engine_out(prog, x, K, np.float64), m(x, K).detach().numpy())
    assert err <= 1e-9, f"{variant} mlp={mlp} head={head}: {err:.2e}"


def test_per_stream_budget_in_step(model, tprog):
    x = torch.randn(3, 12, 3, dtype=torch.float64)
    Kb = np.array([1, 17, 32])
    eng = StreamEngine(tprog, batch=3, dtype=np.float64)
    Y = np.stack([eng.step(np.ascontiguousarray(x[:, t].numpy()), Kb).copy() for t in range(12)], axis=1)
    ref = model(x, torch.from_numpy(Kb)[:, None].expand(3, 12).contiguous()).detach().numpy()
    assert rel_err(Y, ref) <= 1e-9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_equals_per_step_bit_for_bit(prog, dtype):
    rng = np.random.default_rng(1)
    T, B = 60, 3
    X = rng.standard_normal((T, B, 3)).astype(dtype)
    K = rng.integers(1, 33, (T, B))
    a = StreamEngine(prog, batch=B, dtype=dtype)
    Y_step = np.stack([a.step(X[t], K[t]).copy() for t in range(T)])
    b = StreamEngine(prog, batch=B, dtype=dtype)
    parts, t0 = [], 0
    for n in (7, 1, 25, 0, 27):
        parts.append(b.run(X[t0:t0 + n], K[t0:t0 + n]))
        t0 += n
    assert np.array_equal(Y_step, np.concatenate(parts)), "chunked run differs from per-step"
    assert np.array_equal(a.snapshot().hist, b.snapshot().hist)


@pytest.mark.parametrize("kernel", ["numba", "ref"])
def test_step_fast_path_budgets_and_entry_point(prog, kernel):
    """step()'s fast path rewrites the budget array only when the int K changes and calls the compiled
    entry point bound for the step arguments' types: an int K repeated, changed, then a per-stream
    array (the checking path) and the same int again give exactly what run() gives for those budgets."""
    rng = np.random.default_rng(2)
    T, B = 12, 2
    X = rng.standard_normal((T, B, 3))
    ks = [5, 5, 1, 1, 32, np.array([3, 7]), 32, 32, np.array([32, 32]), 4, 4, 5]
    K = np.array([np.broadcast_to(k, (B,)) for k in ks])
    a = StreamEngine(prog, batch=B, dtype=np.float64, kernel=kernel)
    Y_step = np.stack([a.step(X[t], ks[t]).copy() for t in range(T)])
    b = StreamEngine(prog, batch=B, dtype=np.float64, kernel=kernel)
    assert np.array_equal(Y_step, b.run(X, K))
    if kernel == "ref" or not hasattr(a._kernel, "overloads"):   # (NUMBA_DISABLE_JIT: plain functions)
        assert a._fast is a._kernel
    else:
        assert a._fast_of is a._kernel and a._fast is not a._kernel   # the compiled entry point


def test_single_stream_shapes_mirror_input(prog):
    eng = StreamEngine(prog, batch=1, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((10, 3))
    y1 = np.stack([eng.step(x[t], 4).copy() for t in range(10)])
    assert eng.step(x[0], 4).shape == (4,)
    eng.reset()
    assert eng.step(x[0][None], 4).shape == (1, 4)
    eng.reset()
    Y = eng.run(x, 4)
    assert Y.shape == (10, 4) and np.array_equal(Y, y1)
    eng.reset()
    assert np.array_equal(eng.run(x[:, None, :], 4)[:, 0], y1)


def test_snapshot_restore_and_reset(prog):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 2, 3))
    eng = StreamEngine(prog, batch=2, dtype=np.float64)
    first = eng.run(X[:40], 32).copy()
    s = eng.snapshot()
    a = eng.run(X[40:], 5).copy()
    eng.run(X, 3)                     # wander off
    eng.restore(s)
    assert np.array_equal(eng.run(X[40:], 5), a)
    eng.reset()
    assert eng.steps == 0 and np.array_equal(eng.run(X[:40], 32), first)
    other = StreamEngine(prog, batch=3, dtype=np.float64)
    with pytest.raises(ConfigError, match="another program, batch or dtype"):
        other.restore(s)


def test_streams_are_independent(prog):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 5, 3))
    K = rng.integers(1, 33, (40, 5))
    Y = StreamEngine(prog, batch=5, dtype=np.float64).run(X, K)
    for b in range(5):
        y = StreamEngine(prog, batch=1, dtype=np.float64).run(np.ascontiguousarray(X[:, b]), K[:, b])
        assert rel_err(Y[:, b], y) <= 1e-12


def test_bad_input_raises_and_leaves_state(prog):
    eng = StreamEngine(prog, batch=2, dtype=np.float32)
    eng.run(np.ones((5, 2, 3), np.float32), 3)
    before = eng.snapshot()
    bad = [
        (ShapeError, "shape", lambda: eng.step(np.ones((3,), np.float32), 3)),
        (ShapeError, "dtype", lambda: eng.step(np.ones((2, 3), np.float64), 3)),
        (ShapeError, "numpy array", lambda: eng.step([[1, 2, 3], [1, 2, 3]], 3)),
        (BudgetError, "out of range", lambda: eng.step(np.ones((2, 3), np.float32), 33)),
        (BudgetError, "out of range", lambda: eng.step(np.ones((2, 3), np.float32), 0)),
        (BudgetError, "int", lambda: eng.step(np.ones((2, 3), np.float32), 2.0)),
        (BudgetError, "step 0, stream 1", lambda: eng.step(np.ones((2, 3), np.float32), np.array([3, 40]))),
        (BudgetError, "shape", lambda: eng.step(np.ones((2, 3), np.float32), np.array([3, 4, 5]))),
        (BudgetError, "step 3, stream 0", lambda: eng.run(np.ones((5, 2, 3), np.float32), np.array([1, 2, 3, 0, 1]))),
        (BudgetError, "integers", lambda: eng.run(np.ones((5, 2, 3), np.float32), np.ones(5))),
        (ShapeError, "shape", lambda: eng.run(np.ones((5, 3), np.float32), 1)),
    ]
    xn = np.ones((6, 2, 3), np.float32)
    xn[4, 1, 2] = np.nan
    bad.append((NonFiniteInputError, "step 4, stream 1, feature 2", lambda: eng.run(xn, 2)))
    xi = np.ones((2, 3), np.float32)
    xi[0, 0] = np.inf
    bad.append((NonFiniteInputError, "NaN or Inf", lambda: eng.step(xi, 2)))
    for exc, msg, call in bad:
        with pytest.raises(exc, match=msg):
            call()
        after = eng.snapshot()
        assert np.array_equal(after.hist, before.hist) and np.array_equal(after.ist[:3], before.ist[:3]), msg


def test_nan_policy_zero_reads_nonfinite_as_zero(prog):
    X = np.random.default_rng(4).standard_normal((20, 1, 3))
    Xz = X.copy()
    X[5, 0, 1], X[9, 0, 0] = np.nan, -np.inf
    Xz[5, 0, 1], Xz[9, 0, 0] = 0.0, 0.0
    a = StreamEngine(prog, batch=1, dtype=np.float64, nan_policy="zero")
    ya = a.run(X, 6)
    yb = StreamEngine(prog, batch=1, dtype=np.float64).run(Xz, 6)
    assert np.array_equal(ya, yb) and np.all(np.isfinite(ya)) and a.replaced_inputs == 2
    with pytest.raises(ConfigError, match="nan_policy"):
        StreamEngine(prog, nan_policy="ignore")


@pytest.fixture(params=[1, 7, 16], ids=["sgemm-always", "tile-up-to-7-rows", "tile-up-to-16-rows"])
def conv_small(request, monkeypatch):
    """Both convolution paths: sgemm for every product, and the register tile (simd.conv_product) for
    up to n filter rows (numba_config.conv_small_rows: every product of a window that fits the caches)."""
    from essm_stream import numba_config
    monkeypatch.setenv("ESSM_CONV_SMALL_ROWS", str(request.param))
    numba_config.conv_small_rows.cache_clear()
    yield request.param
    numba_config.conv_small_rows.cache_clear()


def test_conv_small_rows_is_every_product_unless_overridden(monkeypatch):
    """The register tile runs every product (k_max rows, at least 2); $ESSM_CONV_SMALL_ROWS overrides,
    and must be >= 1."""
    from essm_stream import numba_config
    monkeypatch.delenv("ESSM_CONV_SMALL_ROWS", raising=False)
    numba_config.conv_small_rows.cache_clear()
    assert numba_config.conv_small_rows(32) == 32 and numba_config.conv_small_rows(1) == 2
    monkeypatch.setenv("ESSM_CONV_SMALL_ROWS", "3")
    numba_config.conv_small_rows.cache_clear()
    assert numba_config.conv_small_rows(32) == 3
    monkeypatch.setenv("ESSM_CONV_SMALL_ROWS", "0")
    numba_config.conv_small_rows.cache_clear()
    with pytest.raises(ValueError, match="ESSM_CONV_SMALL_ROWS"):
        numba_config.conv_small_rows()
    numba_config.conv_small_rows.cache_clear()


@pytest.mark.parametrize("B", [5, 11])   # d=12: 5 streams per history block (layout.hist_blk); 11: three, the last partial
def test_numba_kernel_matches_reference_kernel(B, conv_small):
    """stream_run vs stream_run_ref, same signature and state, pooled head, per-stream budgets."""
    cfg = ESSMConfig(d_in=5, d_out=3, d_model=12, n_layers=2, seq_len=16, k_max=9, d_gate=5,
                     head="mean", pool_window=4)
    prog = tiny_program(cfg, seed=5)
    fast = StreamEngine(prog, batch=B, dtype=np.float64)
    ref = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((37, B, 5))
    K = rng.integers(1, 10, (37, B))
    yf, yr = fast.run(X, K), ref.run(X, K)
    err = rel_err(yf, yr)
    print(f"numba vs reference kernel: max relative error {err:.2e}")
    assert err <= 1e-12
    assert np.allclose(fast.snapshot().hist, ref.snapshot().hist, rtol=0, atol=1e-12)


@pytest.mark.parametrize("B", [1, 6, 19])   # d=10: 6 streams per history block; 19: four blocks, the last partial
def test_float32_kernel_matches_float64_reference_every_budget(B, conv_small):
    """The float32 fast path (one BLAS convolution over every stream's time-major window, α in the
    copy to V, K_t the frame's largest budget) against the float64 numpy reference kernel: every K
    from 1 to K̄ at some step, K changing between steps and differing between streams, 2.5 windows
    (the ring wraps twice), d not a multiple of the 4 × 4 tile. Tolerance TOL[float32] relative."""
    cfg = ESSMConfig(d_in=5, d_out=3, d_model=10, n_layers=2, seq_len=12, k_max=7, d_gate=5)
    prog = tiny_program(cfg, seed=9)
    rng = np.random.default_rng(9)
    T = 30
    X = rng.standard_normal((T, B, 5))
    K = rng.integers(1, 8, (T, B))
    K[:7, 0] = np.arange(1, 8)                      # every budget, K changing every step
    fast = StreamEngine(prog, batch=B, dtype=np.float32)
    assert fast.layout.dims["conv_small"] == conv_small
    ref = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref")
    Y32 = np.concatenate([fast.run(X[t:t + 1].astype(np.float32), K[t:t + 1]) for t in range(T)])
    Y64 = ref.run(X, K)
    err = rel_err(Y32.astype(np.float64), Y64)
    print(f"float32 kernel vs float64 reference, B={B}: max relative error {err:.2e}")
    assert err <= TOL[np.float32]
    assert np.allclose(fast.snapshot().hist, ref.snapshot().hist, rtol=0, atol=1e-5)   # same layout


def test_gemm_nt_matches_reference():
    rng = np.random.default_rng(6)
    A, Bm = rng.standard_normal(400), rng.standard_normal(500)
    for Ma, Nb, acc in ((7, 6, False), (4, 4, True), (1, 9, False), (5, 1, True)):
        o1, o2 = np.ones(200), np.ones(200)
        kernels.gemm_nt(A, 3, 41, Bm, 5, 37, 33, o1, 2, 13, Ma, Nb, acc)
        kernels.gemm_nt_ref(A, 3, 41, Bm, 5, 37, 33, o2, 2, 13, Ma, Nb, acc)
        assert np.allclose(o1, o2, rtol=1e-13, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("small_rows,small_compiled", [("1", 0), ("4", 1)])
def test_exact_engine_compiles_no_other_modes_kernels(tmp_path, small_rows, small_compiled):
    """An exact (FIR) program compiles only its own mode's ops: with an empty numba cache, stepping an
    FIR engine leaves the LDS and LRU kernels uncompiled (they cost a cold start seconds of CPU), and
    the convolution's register tile too unless the layout asks for it (conv_small > 1), and the
    threads=N split (kernels.conv_mix_par) for the default threads=1."""
    code = textwrap.dedent("""
        import numpy as np
        from essm_stream.config import ESSMConfig
        from essm_stream.engine import StreamEngine, tiny_program
        from essm_stream import kernels, kernels_lds, kernels_lru, simd
        cfg = ESSMConfig(d_in=3, d_out=2, d_model=8, n_layers=1, seq_len=8, k_max=4, d_gate=4)
        StreamEngine(tiny_program(cfg), dtype=np.float64).step(np.ones(3), 2)
        n = [len(f.signatures) for f in (kernels_lds.ladder_update, kernels_lds.ladder_readout,
                                          kernels_lds.lds_undo, kernels_lru.lru_undo, kernels.gemm_nt,
                                          simd.tile_product_pf, kernels.conv_mix_par,
                                          kernels._conv_mix_task, kernels.gemm_nt_h)]
        print(n)
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), ESSM_CONV_SMALL_ROWS=small_rows)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    want = f"[0, 0, 0, 0, 1, {small_compiled}, 0, 0, 0]"   # (gemm_nt: the FIR's own; threads=1: no parallel
    #                                                         split; an fp32 program: no float16 mixing)
    assert r.stdout.strip().splitlines()[-1] == want, r.stdout


def test_one_stream_kernel_for_small_windows_is_the_same_loop():
    """A float32 engine of one stream whose d_model is in the small kernel's range (simd.SMALL_MIN …
    SMALL_MAX, the range that holds the demo's d = 32: narrower than a tile with AVX-512's 64 columns,
    one to two tiles with AVX2's 16) runs stream_run_fir_one_narrow, whose convolution compiles only the
    tiles of such windows (simd.small_product_pf; the cold start, docs/PERFORMANCE.md); other widths
    stream_run_fir_one. Both are the same step loop line for line but for the convolution's and the
    mixing's calls (the source compared here, nothing compiled; their outputs are held to the reference
    in test_small_window_kernel_matches_float64_reference_every_budget, tests/test_simd_conv.py,
    tests/test_gemv.py and tests/test_prefetch.py)."""
    import inspect
    import re

    from essm_stream import simd
    tw = simd.TILE_COLS
    for d in sorted({simd.HALF_COLS, simd.SMALL_MIN, simd.SMALL_MAX, tw - 1, tw, tw + 1, 2 * tw, 2 * tw + 1}):
        if d < simd.HALF_COLS:
            continue
        cfg = ESSMConfig(d_in=3, d_out=2, d_model=d, n_layers=1, seq_len=8, k_max=4, d_gate=4)
        e = StreamEngine(tiny_program(cfg), dtype=np.float32)
        small = simd.SMALL_MIN <= d <= simd.SMALL_MAX
        if not kernels.one_stream_mode(e._lay):   # (d > layout.GEMV1_MAX_D: the general kernel)
            assert not small, d
            continue
        want = kernels.stream_run_fir_one_narrow if small else kernels.stream_run_fir_one
        assert kernels.kernel_for(e._lay) is want, d
    assert simd.SMALL_MIN <= simd.SMALL_COLS <= simd.SMALL_MAX or simd.HALF_COLS == tw   # (the demo's d = 32)
    assert simd.small_product_pf is (simd.pair_product_pf if simd.SMALL_PAIR else simd.narrow_product_pf)

    def body(f):   # the source after the def line, without the docstring
        lines = inspect.getsource(f.py_func).splitlines()
        i = next(j for j, ln in enumerate(lines) if ln.startswith("def "))
        return re.sub(r'"""(.|\n)*?"""', "", "\n".join(lines[i + 1:]), count=1)
    narrow = body(kernels.stream_run_fir_one_narrow)
    assert narrow == body(kernels.stream_run_fir_one).replace(
        "convolve_one(", "convolve_one_narrow(").replace("mix_one(", "mix_one_narrow(").replace(
        "ring_write(state, work, lay, 1, l, p) ", "ring_write_one(state, work, lay, l, p)")
    assert "convolve_one_narrow(" in narrow and "mix_one_narrow(" in narrow and "ring_write_one(" in narrow


def test_small_window_kernel_one_stream_ops_match_the_general_ones():
    """The small kernel's one-stream ops against the general ones they replace (their Python bodies, no
    compile): _prefetch_region_one is _prefetch_region for B = 1 at every K, also where the prefetch pays
    and where it is trimmed to PF_LAYER_MAX (many layers, a wide window); ring_write_one makes ring_write's
    stores (state, V[:d], the undo copy) at every layer and ring position."""
    py = lambda f: getattr(f, "py_func", f)   # noqa: E731
    for d, n_layers, k_max in ((32, 2, 32), (32, 16, 32), (24, 40, 16), (128, 2, 24)):
        cfg = ESSMConfig(d_in=3, d_out=2, d_model=d, n_layers=n_layers, seq_len=k_max, k_max=k_max, d_gate=4)
        e = StreamEngine(tiny_program(cfg), dtype=np.float32)
        lay, off, W = e._lay, e._off, e._W
        for l in range(n_layers):
            for K in range(1, k_max + 1):
                got = py(kernels._prefetch_region_one)(W, off, lay, l, K)
                assert got == py(kernels._prefetch_region)(W, off, lay, 1, l, K), (d, n_layers, l, K)
    assert any(py(kernels._prefetch_region_one)(W, off, lay, 0, K)[2] > 0 for K in range(1, k_max + 1))
    rng = np.random.default_rng(3)
    cfg = ESSMConfig(d_in=3, d_out=2, d_model=32, n_layers=2, seq_len=5, k_max=4, d_gate=4)
    e = StreamEngine(tiny_program(cfg), dtype=np.float32)
    lay = e._lay
    for l in range(2):
        for p in range(5):
            state, work = rng.standard_normal(e._state.size), rng.standard_normal(e._work.size)
            s2, w2 = state.copy(), work.copy()
            py(kernels.ring_write_one)(state, work, lay, l, p)
            py(kernels.ring_write)(s2, w2, lay, 1, l, p)
            assert np.array_equal(state, s2) and np.array_equal(work, w2), (l, p)


@pytest.mark.parametrize("which,head", [("min", "mean"), ("max", "step")])
def test_small_window_kernel_matches_float64_reference_every_budget(which, head):
    """stream_run_fir_one_narrow (one float32 stream of simd.SMALL_MIN or SMALL_MAX columns: AVX-512's
    narrow tile, or AVX2's two strips of whole tiles) against the float64 reference: every K from 1 to
    K̄ = 2 R + 1 (R-row tiles, the last rows' smaller ones, the one-row tile), K changing every step, a
    gate and an MLP, the pooled and the per-step head, the ring wrapping, and a window longer than a
    block of τ (simd.TAU_BLOCK). Tolerance TOL[float32] relative."""
    from essm_stream import simd
    d = simd.SMALL_MIN if which == "min" else simd.SMALL_MAX
    if simd.SMALL_MIN > simd.SMALL_MAX:
        pytest.skip("a one-vector tile: no small-window kernel")
    kb = 2 * simd.TILE_ROWS + 1
    T = 3 * kb
    for L in (kb + 2, simd.TAU_BLOCK + 3):   # (K̄ <= L)
        cfg = ESSMConfig(d_in=4, d_out=3, d_model=d, n_layers=2, seq_len=L, k_max=kb, d_gate=5, mlp=True,
                         head=head, pool_window=4)
        prog = tiny_program(cfg, seed=L)
        rng = np.random.default_rng(L)
        X = rng.standard_normal((T, 1, 4))
        K = rng.integers(1, kb + 1, (T, 1))
        K[:kb, 0] = np.arange(1, kb + 1)
        fast = StreamEngine(prog, dtype=np.float32)
        assert kernels.kernel_for(fast._lay) is kernels.stream_run_fir_one_narrow
        Y32 = np.concatenate([fast.run(X[t:t + 1].astype(np.float32), K[t:t + 1]) for t in range(T)])
        Y64 = StreamEngine(prog, dtype=np.float64, kernel="ref").run(X, K)
        err = rel_err(Y32.astype(np.float64), Y64)
        print(f"small-window kernel d={d} L={L} head={head}: max relative error {err:.2e}")
        assert err <= TOL[np.float32], (d, L, head)


@pytest.mark.slow
def test_one_stream_float32_engine_compiles_one_small_kernel(tmp_path):
    """A float32 engine of one stream runs its own kernel, stream_run_fir_one (every product a GEMV on
    input-major weights, the convolution the register tile): with an empty numba cache, a warm-up, a
    run() and steps compile exactly one signature of it and nothing of the general kernel, gemm_nt or
    BLAS's path (the demo's cold start, docs/PERFORMANCE.md); its outputs match the float64 reference."""
    code = textwrap.dedent("""
        import numpy as np
        from essm_stream.config import ESSMConfig
        from essm_stream.engine import StreamEngine, tiny_program
        from essm_stream import kernels, gemv, simd
        cfg = ESSMConfig(d_in=3, d_out=2, d_model=64, n_layers=2, seq_len=8, k_max=4, d_gate=4)
        prog = tiny_program(cfg)
        e = StreamEngine(prog, dtype=np.float32)
        assert kernels.kernel_for(e._lay) is kernels.stream_run_fir_one
        e.warmup()
        rng = np.random.default_rng(1)
        X = rng.standard_normal((20, 1, 3))
        Ks = rng.integers(1, 5, size=(20, 1))
        y = e.run(X[:18].astype(np.float32), Ks[:18])[:, 0]
        y = np.concatenate([y, [e.step(X[t, 0].astype(np.float32), int(Ks[t, 0])).copy() for t in (18, 19)]])
        y64 = StreamEngine(prog, dtype=np.float64, kernel="ref").run(X, Ks)[:, 0]
        err = float(np.abs(y - y64).max() / np.abs(y64).max())
        print([len(kernels.stream_run_fir_one.signatures), len(kernels.stream_run_fir_small.signatures),
               len(kernels.gemm_nt.signatures), len(simd.tile_product_pf.signatures),
               len(gemv.gemv_t.signatures)], err < 2e-5)
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env.pop("ESSM_CONV_SMALL_ROWS", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[1, 0, 0, 1, 1] True", r.stdout


def test_engine_imports_and_steps_without_torch(tmp_path, prog):
    path = str(tmp_path / "p.essm")
    prog.save(path)
    code = textwrap.dedent(f"""
        import sys
        sys.modules['torch'] = None            # any `import torch` now raises ImportError
        import numpy as np
        from essm_stream import StreamEngine, StreamProgram
        p = StreamProgram.load({path!r})
        e = StreamEngine(p, batch=1, dtype=np.float64)
        y = e.run(np.ones((4, 3)), 5)
        assert y.shape == (4, 4) and np.all(np.isfinite(y))
        assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]
        print('ok')
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_kernel_with_jit_disabled_matches(tmp_path):
    """The kernel's Python source (NUMBA_DISABLE_JIT=1) gives what the compiled kernel gives."""
    code = textwrap.dedent("""
        import numpy as np
        from essm_stream.config import ESSMConfig
        from essm_stream.engine import StreamEngine, tiny_program
        from essm_stream import numba_config
        assert numba_config.JIT_DISABLED
        cfg = ESSMConfig(d_in=2, d_out=2, d_model=5, n_layers=2, seq_len=6, k_max=3, d_gate=3,
                         head="mean", pool_window=2)
        e = StreamEngine(tiny_program(cfg, seed=1), batch=2, dtype=np.float64)
        X = np.random.default_rng(0).standard_normal((9, 2, 2))
        K = np.array([[3, 1], [1, 2], [2, 3]] * 3)
        np.save(__import__('sys').argv[1], e.run(X, K))
    """)
    out = str(tmp_path / "y.npy")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = ESSMConfig(d_in=2, d_out=2, d_model=5, n_layers=2, seq_len=6, k_max=3, d_gate=3,
                     head="mean", pool_window=2)
    e = StreamEngine(tiny_program(cfg, seed=1), batch=2, dtype=np.float64)
    X = np.random.default_rng(0).standard_normal((9, 2, 2))
    K = np.array([[3, 1], [1, 2], [2, 3]] * 3)
    assert rel_err(np.load(out), e.run(X, K)) <= 1e-12


def test_step_allocates_nothing(prog):
    import tracemalloc
    eng = StreamEngine(prog, batch=2, dtype=np.float32)
    x = np.ones((2, 3), np.float32)
    for _ in range(5):
        eng.step(x, 7)
    tracemalloc.start()
    s0 = tracemalloc.take_snapshot()
    for _ in range(200):
        eng.step(x, 7)
    s1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(st.size_diff for st in s1.compare_to(s0, "filename") if st.size_diff > 0
                and "tracemalloc" not in str(st.traceback))
    assert grown < 2048, f"200 steps retained {grown} bytes"


def test_gelu_float32_rational_erf_matches_libm():
    """float32 engines use a branch-free rational erf in GELU (vectorizes); float64 keeps libm erf."""
    import math
    x = np.linspace(-9, 9, 4001)
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    g32, g64 = x.astype(np.float32), x.copy()
    kernels._gelu(g32, 0, len(x))
    kernels._gelu(g64, 0, len(x))
    err32 = float(np.max(np.abs(g32 - want) / np.maximum(1.0, np.abs(want))))
    print(f"GELU float32 rational erf: max error {err32:.1e} (tol 1e-6); float64 {np.max(np.abs(g64 - want)):.1e}")
    assert err32 <= 1e-6
    assert np.max(np.abs(g64 - want)) <= 1e-15


def test_read_only_inputs_reuse_the_compiled_kernel(prog):
    """A read-only X or (T, B) budget array (a broadcast view, a frozen caller array) runs on the kernel
    already compiled for writeable inputs instead of a second numba specialization (seconds of CPU on
    a cold cache), and gives the same outputs."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((6, 2, CFG.d_in))
    K = rng.integers(1, CFG.k_max + 1, (6, 2))
    a = StreamEngine(prog, batch=2, dtype=np.float64)
    want = a.run(X, K)
    n = len(a._kernel.signatures)
    Xr, Kr = X.copy(), K.copy()
    Xr.flags.writeable = Kr.flags.writeable = False
    b = StreamEngine(prog, batch=2, dtype=np.float64)
    got = np.concatenate([b.run(Xr[:3], Kr[:3]), b.run(Xr[3:], np.broadcast_to(Kr[3:4], (3, 2)))])
    assert b._kernel is a._kernel and len(b._kernel.signatures) == n
    assert np.array_equal(got[:3], want[:3])
    assert not Xr.flags.writeable and not Kr.flags.writeable      # the caller's arrays are left as they were


def test_one_stream_engine_packed_arguments_and_frames_passed_directly():
    """The one-stream kernel's packed call (kernels.pack_one / unpack_one): the engine's W, state, work,
    off, lay and ist are views of its two buffers; step() hands a C-contiguous frame ((d_in,), read-only,
    (1, d_in)) to the kernel itself and copies a strided one, all on one compiled signature, with the same
    outputs as run(); an overflowing frame is taken back through the packed call (step, and run with
    nan_policy='zero', which runs the frames after it)."""
    from essm_stream.engine import NonFiniteOutputError
    cfg = ESSMConfig(d_in=3, d_out=2, d_model=64, n_layers=2, seq_len=8, k_max=4, d_gate=4)
    prog = tiny_program(cfg, seed=5)
    e = StreamEngine(prog, dtype=np.float32)
    if not e._packed:
        pytest.skip("this build runs the general kernel for one stream")
    for a, buf in ((e._W, e._F), (e._state, e._F), (e._work, e._F), (e._off, e._I), (e._lay, e._I), (e._ist, e._I)):
        assert np.shares_memory(a, buf) and a.flags.c_contiguous
    rng = np.random.default_rng(6)
    X = rng.standard_normal((14, cfg.d_in)).astype(np.float32)
    Ks = rng.integers(1, cfg.k_max + 1, 14)
    want = StreamEngine(prog, dtype=np.float32).run(X, Ks)
    wide = np.zeros((14, 2 * cfg.d_in), np.float32)
    wide[:, ::2] = X
    got = []
    for t in range(14):
        x = X[t]
        if t % 4 == 1:
            x = wide[t, ::2]                      # strided
        elif t % 4 == 2:
            x = X[t].copy()
            x.flags.writeable = False             # read-only
        elif t % 4 == 3:
            x = X[t][None]                        # (1, d_in)
        got.append(np.ravel(e.step(x, int(Ks[t]))).copy())
    assert np.array_equal(np.array(got), want)
    assert len(e._kernel.signatures) == 1
    big = np.full(cfg.d_in, np.finfo(np.float32).max, np.float32) * np.sign(prog.arrays["inp.W"][0]).astype(np.float32)
    s = e.snapshot()
    with pytest.raises(NonFiniteOutputError):
        e.step(big, 2)
    assert np.array_equal(e.snapshot().state, s.state) and e.steps == 14
    z = StreamEngine(prog, dtype=np.float32, nan_policy="zero")
    Y = z.run(np.concatenate([X[:3], big[None], X[3:6]]), 3)
    assert z.skipped_frames == 1 and not Y[3].any()
    ref = StreamEngine(prog, dtype=np.float32)
    assert np.array_equal(Y[[0, 1, 2, 4, 5, 6]], ref.run(X[:6], 3))
