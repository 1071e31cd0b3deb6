"""StreamEngine(threads=N): a step's convolution and mixing split across numba's thread pool
(kernels.conv_mix_par) must give what the float64 reference gives, at every K, for one stream (the
filter channels split) and several (the streams split), with per-stream and per-step budgets, and
agree with the single-thread kernel. No timing here (docs/PERFORMANCE.md "Threads" has the speed)."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
from essm_stream.errors import ConfigError
from essm_stream.layout import CONV_SMALL, PAR_MIN_K

NEED_2 = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba's pool has one thread")


# float32 throughout: the product's dtype, and one compile of the split kernel (≈ 18 s cold: a float64
# one as well would double it). Against the float64 reference 2e-4 (as test_engine's float32 checks);
# against the single-thread float32 kernel 2e-5 (the same sums in another order).
TOL_REF, TOL_ONE = 2e-4, 2e-5
F32 = np.float32


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


@pytest.fixture(params=["0", "2000"], ids=["always-split", "split-from-K6"], autouse=True)
def par_min(request, monkeypatch):
    """Every frame split (ESSM_PARALLEL_MIN_WORK=0), and a threshold inside the test config's range:
    B=1 frames with K_t <= 5 (B K_t d (L + d) = 336 K_t < 2000) run on the calling thread, the rest split."""
    monkeypatch.setenv("ESSM_PARALLEL_MIN_WORK", request.param)
    return int(request.param)


@pytest.fixture(scope="module")
def prog():
    # d=12: five streams per history block (layout.hist_blk), so B=11 has three blocks, the last partial;
    # K̄=9 with two threads splits the channels 0-3 / 4-8 (B=1); pooled head; gated; MLP
    cfg = ESSMConfig(d_in=5, d_out=3, d_model=12, n_layers=2, seq_len=16, k_max=9, d_gate=5,
                     head="mean", pool_window=4)
    return tiny_program(cfg, seed=7)


@NEED_2
@pytest.mark.parametrize("B", [1, 3, 11])   # channels split (B < 4 threads), streams split (11)
def test_threads_match_reference_and_single_thread_every_budget(prog, B):
    """K = 1 (one task has no channel), 2, 5 (uneven split), K̄, each through the ring's wrap-around
    (T > L), then budgets that change every step and differ per stream: threads=2 against the float64
    reference kernel and the single-thread kernel."""
    rng = np.random.default_rng(B)
    T = 24
    X = rng.standard_normal((T, B, 5))
    for K in (1, 2, 5, 9, "schedule"):
        Ks = rng.integers(1, 10, (T, B)) if K == "schedule" else K
        ref = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref").run(X, Ks)
        one = StreamEngine(prog, batch=B, dtype=F32).run(X.astype(F32), Ks)
        two = StreamEngine(prog, batch=B, dtype=F32, threads=2).run(X.astype(F32), Ks)
        assert rel_err(two, ref) <= TOL_REF, K
        assert rel_err(two, one) <= TOL_ONE, K


@NEED_2
def test_threads_step_equals_run_and_state_round_trips(prog):
    """step() and run() take the same parallel kernel: per-step K changes and per-stream K arrays
    through step(), snapshot/restore in between, equal to one run() of the same frames."""
    B, T = 3, 25
    rng = np.random.default_rng(3)
    X = rng.standard_normal((T, B, 5)).astype(F32)
    Ks = rng.integers(1, 10, (T, B))
    a = StreamEngine(prog, batch=B, dtype=F32, threads=2)
    ys = []
    for t in range(T):
        if t == 10:
            s = a.snapshot()
            a.step(X[t], 9)          # a frame that is then taken back
            a.restore(s)
        ys.append(a.step(X[t], Ks[t] if t % 2 else int(Ks[t, 0])).copy())
    Kr = Ks.copy()
    Kr[::2] = Ks[::2, :1]
    b = StreamEngine(prog, batch=B, dtype=F32, threads=2).run(X, Kr)
    assert np.array_equal(np.stack(ys), b)


def test_threads_argument_is_checked(prog):
    for bad in (0, -1, 1.5, True, "2", numba.config.NUMBA_NUM_THREADS + 1):
        with pytest.raises(ConfigError, match="threads"):
            StreamEngine(prog, threads=bad)
    assert StreamEngine(prog, threads=1).threads == 1


@NEED_2
def test_threads_refused_for_lds_programs():
    from essm_stream import lds
    from essm_stream.compile import compile_weights
    from essm_stream.hankel import spectral_filters
    from essm_stream.program import StreamProgram

    from programs import export_weights
    cfg = ESSMConfig(d_in=2, d_out=2, d_model=4, n_layers=1, seq_len=32, k_max=4, d_gate=2)
    w = export_weights(cfg, 0)
    w["blocks.0.essm.sigma"], w["blocks.0.essm.phi"] = spectral_filters(cfg.seq_len, cfg.k_max)
    prog = lds.lds_program(StreamProgram(cfg, compile_weights(w, cfg)), tol=1e-2)
    with pytest.raises(ConfigError, match="threads=2.*spectral='lds'"):
        StreamEngine(prog, threads=2)
    StreamEngine(prog, threads=1)


@NEED_2
@pytest.mark.parametrize("B", [1, 11])
def test_threads_with_the_few_row_loop(prog, B, monkeypatch, par_min):
    """The tasks' products through the register tile (simd.conv_product) for up to 16 filter rows and BLAS
    above: still the reference."""
    from essm_stream import numba_config
    monkeypatch.setenv("ESSM_CONV_SMALL_ROWS", "16")
    numba_config.conv_small_rows.cache_clear()
    try:
        rng = np.random.default_rng(11)
        X = rng.standard_normal((24, B, 5))
        Ks = rng.integers(1, 10, (24, B))
        ref = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref").run(X, Ks)
        two = StreamEngine(prog, batch=B, dtype=F32, threads=2)
        assert int(two.layout.lay[CONV_SMALL]) == 16 and int(two.layout.lay[PAR_MIN_K]) == par_min
        assert rel_err(two.run(X.astype(F32), Ks), ref) <= TOL_REF
    finally:
        numba_config.conv_small_rows.cache_clear()


def test_parallel_min_work_env_is_checked(prog, monkeypatch):
    from essm_stream.engine import PARALLEL_MIN_WORK_CHANNELS, PARALLEL_MIN_WORK_STREAMS, parallel_min_work
    monkeypatch.setenv("ESSM_PARALLEL_MIN_WORK", "-3")
    with pytest.raises(ConfigError, match="ESSM_PARALLEL_MIN_WORK"):
        StreamEngine(prog, threads=2) if numba.config.NUMBA_NUM_THREADS >= 2 else parallel_min_work()
    monkeypatch.delenv("ESSM_PARALLEL_MIN_WORK")
    assert parallel_min_work() == (PARALLEL_MIN_WORK_CHANNELS, PARALLEL_MIN_WORK_STREAMS)


def test_workqueue_layer_is_warned_about(monkeypatch, caplog):
    """numba's fallback layer (no OpenMP / TBB) forks and joins in ~80 µs: an engine with threads > 1
    says so once (the check itself, not the machine's layer, is what is tested here)."""
    import logging

    from numba.np.ufunc import parallel as par

    from essm_stream import engine as eng_mod
    monkeypatch.setattr(eng_mod, "_layer_checked", [])
    monkeypatch.setattr(par, "_launch_threads", lambda: None)
    monkeypatch.setattr(numba, "threading_layer", lambda: "workqueue")
    with caplog.at_level(logging.WARNING, logger="essm_stream.engine"):
        eng_mod._check_threading_layer()
        eng_mod._check_threading_layer()
    assert sum("workqueue" in r.message for r in caplog.records) == 1


@NEED_2
def test_threads_snapshot_moves_between_thread_counts_and_overflow_is_taken_back(prog):
    """The state layout does not depend on threads: a threads=1 snapshot restores into a threads=2
    engine (and continues exactly); a frame that overflows inside a split step is taken back."""
    from essm_stream.engine import NonFiniteOutputError
    rng = np.random.default_rng(9)
    X = rng.standard_normal((30, 3, 5)).astype(F32)
    one = StreamEngine(prog, batch=3, dtype=F32)
    two = StreamEngine(prog, batch=3, dtype=F32, threads=2)
    one.run(X[:20], 9)
    two.restore(one.snapshot())
    assert rel_err(two.run(X[20:], 9), one.run(X[20:], 9)) <= TOL_ONE
    f32 = StreamEngine(prog, batch=3, dtype=F32, threads=2)
    f32.run(X[:20], 9)
    before = f32.snapshot()
    big = np.full((3, 5), 3e38, dtype=np.float32)
    with pytest.raises(NonFiniteOutputError):
        f32.step(big, 9)
    after = f32.snapshot()
    assert np.array_equal(after.state, before.state) and np.array_equal(after.ist[:3], before.ist[:3])


@NEED_2
def test_threads_with_background_compile(prog):
    """The split kernel compiled in the background thread while the reference steps, then handed over."""
    rng = np.random.default_rng(10)
    X = rng.standard_normal((24, 3, 5))
    bg = StreamEngine(prog, batch=3, dtype=F32, threads=2, background_compile=True)
    ys = [bg.step(X[t].astype(F32), 7).copy() for t in range(4)]
    assert bg.wait_compiled(120)
    ys += [bg.step(X[t].astype(F32), 7).copy() for t in range(4, 24)]
    ref = StreamEngine(prog, batch=3, dtype=np.float64, kernel="ref").run(X, 7)
    assert bg.compiled and rel_err(np.stack(ys), ref) <= TOL_REF
