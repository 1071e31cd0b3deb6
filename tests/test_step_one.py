"""The one-stream float32 step's internals of session 12 (docs/PERFORMANCE.md "Session 12: the step"):
the gate's softmax over views with a polynomial exp (kernels._softmax_one, _exp_neg), and the rule that
streams the mixing weights through L1 (numba_config.stream_step_min; session 13: AMD CPUs only), each held
to numpy float64."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from essm_stream import kernels, numba_config
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
from essm_stream.numba_config import njit

TOL32 = 2e-5   # float32 engine vs float64 maths, relative to the largest output (test_engine.TOL)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@njit
def _exp_all(x, out):
    for i in range(x.size):
        out[i] = kernels._exp_neg(x[i])


def test_exp_neg_matches_numpy_where_the_softmax_reads_it():
    """_exp_neg over the softmax's arguments (s̃_k - max >= -2 sqrt(K), K up to 2500) and beyond its
    clamp: within 1e-11 of np.exp relative to the value, compiled and in plain Python; below -EXP_MIN it
    gives exp(-EXP_MIN) (a denormal in float32: 0 or near it, as np.exp's value is), never NaN or Inf."""
    x = np.concatenate([-np.linspace(0.0, kernels.EXP_MIN, 20001), [-0.0, -1e-300, -1e-8, -0.5, -89.9]])
    got = np.empty_like(x)
    _exp_all(x, got)
    want = np.exp(x)
    assert np.max(np.abs(got / want - 1)) < 1e-11
    assert np.max(np.abs(np.array([kernels._exp_neg.py_func(v) for v in x[::97]]) / want[::97] - 1)) < 1e-11
    far = np.array([-kernels.EXP_MIN - 1e-9, -500.0, -1e6, -np.finfo(np.float64).max])
    got = np.empty_like(far)
    _exp_all(far, got)
    assert np.all(np.isfinite(got)) and np.all(got >= 0) and np.all(got <= math.exp(-kernels.EXP_MIN) * (1 + 1e-12))
    assert np.all(got.astype(np.float32) <= np.float32(1e-40))


@njit
def _softmax(work, ss, W, b2, K, eps):
    kernels._softmax_one(work, ss, W, b2, K, eps)


def _softmax_ref(s, b, K, eps):
    v = s[:K].astype(np.float64) + b[:K]
    v = v * math.sqrt(K) / (np.sqrt(np.sum(v * v)) + eps)
    e = np.exp(v - v.max())
    return e / e.sum()


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_softmax_one_matches_float64_every_k(scale):
    """_softmax_one at every K from 1 to 40 (one and several vectors, remainders) on float32 scores and
    biases at offsets that are no multiple of a vector, against the float64 softmax of
    reference._gate_softmax's maths: within float32 rounding, the K weights sum to 1, and nothing past K
    is written."""
    rng = np.random.default_rng(int(scale * 7) + 1)
    eps = 1e-6
    for K in range(1, 41):
        work = (rng.standard_normal(64) * scale).astype(np.float32)
        W = (rng.standard_normal(64) * scale).astype(np.float32)
        ss, b2 = 3, 5
        before = work.copy()
        want = _softmax_ref(work[ss:], W[b2:], K, eps)
        _softmax(work, ss, W, b2, K, eps)
        got = work[ss:ss + K].astype(np.float64)
        assert np.max(np.abs(got - want)) <= 4e-7, K
        assert abs(got.sum() - 1) < 1e-5
        assert np.array_equal(work[:ss], before[:ss]) and np.array_equal(work[ss + K:], before[ss + K:])


def test_stream_step_min_rule(monkeypatch):
    """On AMD CPUs AVX2 targets stream the one-stream mixing at every budget, others from the L2 and a
    quarter; on any other CPU (an Intel Xeon: the streamed lines come back from DRAM) never.
    $ESSM_STREAM_MIX overrides it: never, always, or bytes; anything else is refused."""
    if os.environ.get("ESSM_STREAM_MIX"):
        pytest.skip("ESSM_STREAM_MIX is set: the rule is overridden in this process")
    if numba_config.cpu_vendor() == "AuthenticAMD":
        want = 0 if numba_config.simd_target() == (32, 16) else numba_config.l2_bytes() * 5 // 4
    else:
        want = numba_config.STREAM_NEVER
    assert numba_config.stream_step_min() == want == kernels.STREAM_STEP_MIN
    for env, got in (("never", numba_config.STREAM_NEVER), ("always", 0), ("262144", 262144), ("0", 0)):
        monkeypatch.setenv("ESSM_STREAM_MIX", env)
        assert numba_config.stream_step_min() == got
    for bad in ("-1", "sometimes", "1.5"):
        monkeypatch.setenv("ESSM_STREAM_MIX", bad)
        with pytest.raises(ValueError, match="ESSM_STREAM_MIX"):
            numba_config.stream_step_min()


def test_stream_mix_setting_is_part_of_the_kernel_cache_key(monkeypatch):
    """STREAM_STEP_MIN is a constant of the compiled step: a process with another $ESSM_STREAM_MIX must not
    load kernels compiled under this one's."""
    monkeypatch.delenv("ESSM_STREAM_MIX", raising=False)
    keys = {numba_config.kernel_source_key()}
    for env in ("never", "always", "262144"):
        monkeypatch.setenv("ESSM_STREAM_MIX", env)
        keys.add(numba_config.kernel_source_key())
    assert len(keys) == 4


_CFG64 = ESSMConfig(d_in=7, d_out=5, d_model=64, n_layers=2, seq_len=17, k_max=13, d_gate=16, mlp=True)


def _streams_at():
    """kernels._streams_mix's decision (plain Python) for _one_stream_every_budget's engine at K = 1 … K̄."""
    e = StreamEngine(tiny_program(_CFG64, seed=12), dtype=np.float32)
    f = getattr(kernels._streams_mix, "py_func", kernels._streams_mix)
    return [bool(f(e._W, e._lay, K)) for K in range(1, _CFG64.k_max + 1)]


def _one_stream_every_budget():
    """A one-stream float32 engine of d = 64 (one GEMV chunk: the streamed mixing's shape), gated, with
    the MLP, at every K from 1 to K̄ = 13 (AVX2: the 4 × 3 × 8 strips, 6-row tiles and the 4-row tail),
    K changing every frame and the ring wrapping, against the float64 reference. Returns the error."""
    cfg = _CFG64
    prog = tiny_program(cfg, seed=12)
    rng = np.random.default_rng(12)
    T = 40
    X = rng.standard_normal((T, 1, cfg.d_in))
    K = rng.integers(1, cfg.k_max + 1, (T, 1))
    K[:cfg.k_max, 0] = np.arange(1, cfg.k_max + 1)
    fast = StreamEngine(prog, dtype=np.float32)
    assert kernels.kernel_for(fast._lay) is kernels.stream_run_fir_one
    ref = StreamEngine(prog, dtype=np.float64, kernel="ref")
    Y = np.concatenate([fast.run(X[t:t + 1].astype(np.float32), K[t:t + 1]) for t in range(T)])
    return rel_err(Y.astype(np.float64), ref.run(X, K)), Y


# all layers' active Mcat of _one_stream_every_budget's engine at budget K: 2 layers × (K + 1) × 64 × 64 float32
def _mcat_bytes(K):
    return 2 * (K + 1) * 64 * 64 * 4


def test_one_stream_engine_d64_matches_reference_every_budget():
    assert _one_stream_every_budget()[0] <= TOL32


@pytest.mark.slow
def test_streamed_and_resident_mixing_give_the_same_outputs(tmp_path):
    """The one-stream step with its mixing never streamed ($ESSM_STREAM_MIX=never: gemv_t through L2) and
    streamed from K = 7 on (a threshold of _mcat_bytes(7): K = 1 … 6 take gemv_t, K = 7 … 13 gemv_stream,
    both branches in one run, K changing every frame), each in a process of its own (the threshold is a
    constant of the compiled kernel): each within TOL32 of the float64 reference at every budget, and the
    two bit for bit the same (gemv_stream's sums are gemv_t's; only the prefetch differs)."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from essm_stream import kernels
        import test_step_one as t
        assert kernels.STREAM_STEP_MIN == int(sys.argv[1])
        print("streams", "".join("1" if b else "0" for b in t._streams_at()))
        err, Y = t._one_stream_every_budget()
        assert err <= t.TOL32, err
        np.save(sys.argv[2], Y)
        print("ok", err)
    """)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    assert _mcat_bytes(6) < _mcat_bytes(7) <= _mcat_bytes(13)
    got = {}
    for name, setting, want in (("never", "never", numba_config.STREAM_NEVER),
                                ("split", str(_mcat_bytes(7)), _mcat_bytes(7))):
        out = tmp_path / f"{name}.npy"
        r = subprocess.run([sys.executable, "-c", code, str(want), str(out)], env=dict(env, ESSM_STREAM_MIX=setting),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
        got[name] = np.load(out)
        streams = r.stdout.split("streams ")[1].split()[0]
        assert streams == ("0" * 13 if name == "never" else "0" * 6 + "1" * 7), streams
    assert got["never"].dtype == np.float32 and np.all(np.isfinite(got["never"]))
    assert np.array_equal(got["never"], got["split"])


@pytest.mark.slow
def test_one_stream_engine_d64_avx2_compiled(tmp_path):
    """The same under the AVX2 emulation (numba compiling for Haswell, its own kernel cache), where the
    mixing is streamed at every budget on AMD CPUs (never elsewhere): the AVX2 step's code is checked on
    any x86 machine."""
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the AVX2 emulation needs an x86-64 host")
    code = textwrap.dedent("""
        from essm_stream import kernels, numba_config
        import test_step_one as t
        assert numba_config.simd_target() == (32, 16)
        assert kernels.STREAM_STEP_MIN == (0 if numba_config.cpu_vendor() == "AuthenticAMD" else numba_config.STREAM_NEVER)
        err = t._one_stream_every_budget()[0]
        assert err <= t.TOL32, err
        print("ok", err)
    """)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="",
               PYTHONPATH=os.pathsep.join([here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    env.pop("ESSM_CONV_TILE", None)
    env.pop("ESSM_STREAM_MIX", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_cpu_vendor_from_proc_or_platform(monkeypatch, tmp_path):
    """cpu_vendor: /proc/cpuinfo's vendor_id where it exists; else the vendor named in platform.processor()
    (Windows); else ""."""
    import builtins
    import platform
    real_open = builtins.open
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n\nprocessor\t: 1\n")

    def opener(path, *a, **k):
        if path == "/proc/cpuinfo":
            if not fake.exists():
                raise FileNotFoundError(path)
            return real_open(fake, *a, **k)
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", opener)
    try:
        numba_config.cpu_vendor.cache_clear()
        assert numba_config.cpu_vendor() == "AuthenticAMD"
        fake.unlink()
        monkeypatch.setattr(platform, "processor", lambda: "Intel64 Family 6 Model 207 Stepping 2, GenuineIntel")
        numba_config.cpu_vendor.cache_clear()
        assert numba_config.cpu_vendor() == "GenuineIntel"
        monkeypatch.setattr(platform, "processor", lambda: "arm")
        numba_config.cpu_vendor.cache_clear()
        assert numba_config.cpu_vendor() == ""
    finally:
        numba_config.cpu_vendor.cache_clear()
