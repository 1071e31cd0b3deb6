"""Background compile (issue 13, cold start): an engine built with background_compile=True steps with
the numpy reference kernel on the same state while its numba kernel compiles in a thread, then hands
over at a call boundary. Held here: the handover at step n gives the numba-only run's outputs within
the float32 tolerance at every step and every K (K changing per step and per stream, the ring
wrapping, a pooled head), in step() and in run(); a failed compile leaves a working engine.

The compile is held back deterministically by holding numba's global compiler lock in the test's
thread (Dispatcher.compile takes it before anything else, even for an overload already in memory)."""
import numpy as np
import pytest
from numba.core.compiler_lock import global_compiler_lock

from essm_stream import kernels
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
from essm_stream.errors import ConfigError
from essm_stream.numba_config import JIT_DISABLED

TOL32 = 2e-5          # float32 engine vs float64 maths, relative to the largest output (test_engine.TOL)
CFG = ESSMConfig(d_in=5, d_out=3, d_model=10, n_layers=2, seq_len=8, k_max=7, d_gate=5, head="mean",
                 pool_window=3)

pytestmark = pytest.mark.skipif(JIT_DISABLED, reason="no compile to run in the background")


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _stream(T, B, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((T, B, CFG.d_in)).astype(np.float32)
    K = rng.integers(1, CFG.k_max + 1, (T, B))
    K[:CFG.k_max, 0] = np.arange(1, CFG.k_max + 1)     # every budget, changing every step
    return X, K


@pytest.mark.parametrize("n", [0, 5, 13])           # 13 > 8 = L: the reference wrote a whole window
def test_handover_at_step_n_equals_the_numba_only_run(n):
    B, T = 2, 24
    prog = tiny_program(CFG, seed=4)
    X, K = _stream(T, B)
    only = StreamEngine(prog, batch=B, dtype=np.float32)
    want = np.stack([only.step(X[t], K[t]).copy() for t in range(T)])

    got = []
    with global_compiler_lock:                       # the compile thread waits here
        eng = StreamEngine(prog, batch=B, dtype=np.float32, background_compile=True)
        for t in range(n):
            got.append(eng.step(X[t], K[t]).copy())
        assert not eng.compiled and eng.handover_step is None
    assert eng.wait_compiled(timeout=300)
    for t in range(n, T):
        got.append(eng.step(X[t], K[t]).copy())
    assert eng.compiled and eng.handover_step == n
    err = rel_err(np.stack(got), want)
    print(f"handover at step {n}: max relative difference from the numba-only run {err:.2e}")
    assert err <= TOL32
    assert np.allclose(eng.snapshot().hist, only.snapshot().hist, rtol=0, atol=1e-5)
    assert eng.steps == only.steps == T
    info = eng.compile_info
    assert info["done"] and info["error"] is None and info["handover_step"] == n
    assert info["source"] in ("compiled", "cache", "memory") and info["cpu_s"] >= 0


def test_handover_between_run_blocks():
    B, T = 3, 20
    prog = tiny_program(CFG, seed=6)
    X, K = _stream(T, B, seed=6)
    want = StreamEngine(prog, batch=B, dtype=np.float32).run(X, K)
    with global_compiler_lock:
        eng = StreamEngine(prog, batch=B, dtype=np.float32, background_compile=True)
        Y0 = eng.run(X[:11], K[:11])                 # 11 frames on the reference kernel
    eng.warmup()                                     # waits for the compile; state untouched
    assert eng.steps == 11
    Y1 = eng.run(X[11:], K[11:])
    assert eng.handover_step == 11
    assert rel_err(np.concatenate([Y0, Y1]), want) <= TOL32


def test_a_failed_background_compile_keeps_a_working_engine(monkeypatch):
    class Broken:                                    # a "dispatcher" whose compile fails
        overloads, stats = {}, None

        def compile(self, sig):
            raise RuntimeError("no compiler here")

    monkeypatch.setattr(kernels, "kernel_for", lambda lay: Broken())
    prog = tiny_program(CFG, seed=7)
    X, K = _stream(12, 1, seed=7)
    eng = StreamEngine(prog, batch=1, dtype=np.float64, background_compile=True)
    with pytest.raises(Exception):
        eng.wait_compiled(timeout=60)
    Y = eng.run(X[:, 0].astype(np.float64), K[:, 0])  # the reference kernel, logged as an error
    ref = StreamEngine(prog, batch=1, dtype=np.float64, kernel="ref").run(X[:, 0].astype(np.float64), K[:, 0])
    assert np.array_equal(Y, ref)
    assert not eng.compiled and eng.compile_info["error"] is not None


def test_background_compile_argument_is_checked():
    with pytest.raises(ConfigError, match="background_compile"):
        StreamEngine(tiny_program(CFG), background_compile="yes")
    eng = StreamEngine(tiny_program(CFG), kernel="ref", background_compile=True)   # nothing to compile
    assert eng.compile_info is None and not eng.compiled and eng.wait_compiled()


def test_the_collector_thresholds_come_back_after_a_compile():
    import gc
    before = gc.get_threshold()
    eng = StreamEngine(tiny_program(CFG, seed=8), background_compile=True)
    eng.wait_compiled(timeout=300)
    eng._compiler.thread.join(timeout=60)           # (the thread restores them as it ends)
    assert gc.get_threshold() == before


_WARM_CHILD = r"""
import json, sys
import numpy as np
from essm_stream.engine import StreamEngine
from essm_stream.kws.spotter import load_program
prog = load_program(None)
rng = np.random.default_rng(11)
X = rng.standard_normal((40, prog.d_in)).astype(np.float32)
K = rng.integers(1, prog.k_max + 1, 40)
eng = StreamEngine(prog, batch=1, dtype=np.float32, background_compile=True)
assert eng.wait_compiled(timeout=300)
Y = np.stack([eng.step(X[t], int(K[t])).copy() for t in range(40)])
registries = "numba.np.arraymath" in sys.modules
two = StreamEngine(prog, batch=2, dtype=np.float32)     # the general kernel (B > 1: BLAS where it takes it)
two.warmup()
Y2 = two.run(np.stack([X, X[::-1]], axis=1), np.stack([K, K[::-1]], axis=1))
print("RESULT", json.dumps({"source": eng.compile_info["source"], "handover": eng.handover_step,
                            "registries": registries, "Y": Y.astype(float).tolist(),
                            "Y2": Y2.astype(float).tolist()}))
"""


def test_a_kernel_from_the_disk_cache_loads_without_numbas_registries_and_steps_the_same():
    """A fresh process whose kernel is in the disk cache loads it without numba's registry refresh
    (engine._load_cached: no numba.np.arraymath, no SciPy linalg) and steps bit for bit as the
    kernel compiled or loaded here (the same machine code; the demo's program, one float32 stream);
    so does a two-stream engine's kernel that warmup() loads after it."""
    import json
    import os
    import subprocess
    import sys

    from essm_stream.kws.spotter import load_program
    from essm_stream.numba_config import _CACHE_DIR
    if _CACHE_DIR is None:
        pytest.skip("no numba disk cache in this environment")
    prog = load_program(None)
    eng = StreamEngine(prog, batch=1, dtype=np.float32)
    eng.warmup()                                     # compiled (and written to the cache) or loaded from it
    rng = np.random.default_rng(11)
    X = rng.standard_normal((40, prog.d_in)).astype(np.float32)
    K = rng.integers(1, prog.k_max + 1, 40)
    want = np.stack([eng.step(X[t], int(K[t])).copy() for t in range(40)])
    two = StreamEngine(prog, batch=2, dtype=np.float32)
    two.warmup()
    want2 = two.run(np.stack([X, X[::-1]], axis=1), np.stack([K, K[::-1]], axis=1))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _WARM_CHILD], env=env, capture_output=True, text=True, timeout=600)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and line, r.stderr[-2000:]
    got = json.loads(line[-1][len("RESULT "):])
    assert got["source"] == "cache" and got["handover"] == 0
    assert not got["registries"]                     # the refresh (and its SciPy import) was skipped
    assert np.array_equal(np.array(got["Y"], dtype=np.float32), want)
    assert np.array_equal(np.array(got["Y2"], dtype=np.float32), want2)   # (loaded the same way by warmup)
