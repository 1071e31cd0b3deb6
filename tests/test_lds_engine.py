"""spectral="lds" programs in the StreamEngine, held to the exact engine and to the numpy reference.

Tolerances (relative to the exact output's max magnitude):
* LDS numba kernel vs its plain reference (`kernel="ref"`): float64 <= 1e-12, float32 <= 2e-5;
* LDS engine vs exact engine, white noise and a task stream, 100·L steps, float32, every K and with
  K jumps: <= tol (the program's fit tolerance, 1e-3; measured ~1e-4), and no growth: the last
  tenth of the stream is within 2x of the first tenth's error (+1e-6);
* a trained model's task accuracy (digits, float32 engines) changes by <= 0.2 pp (slow test).
"""
import numpy as np
import pytest

from essm_stream import lds
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine
from essm_stream.errors import ProgramError
from essm_stream.hankel import spectral_filters
from essm_stream.program import StreamProgram

from programs import export_weights

TOL = 1e-3
CFG = ESSMConfig(d_in=3, d_out=4, d_model=8, n_layers=2, seq_len=64, k_max=16, d_gate=8)
BUDGETS = [1, 2, 3, 5, 8, 12, 16]


def hankel_programs(cfg=CFG, seed=0, **kw):
    """(exact, lds) programs of the same random weights with the real Hankel filters (the ladder
    only fits those), σ^{1/4} folded into Mcat as a trained model's."""
    from essm_stream.compile import compile_weights
    w = export_weights(cfg, seed)
    sigma, phi = spectral_filters(cfg.seq_len, cfg.k_max)
    for i in range(cfg.n_layers):
        w[f"blocks.{i}.essm.phi"], w[f"blocks.{i}.essm.sigma"] = phi, sigma
    exact = StreamProgram(cfg, compile_weights(w, cfg))
    return exact, lds.lds_program(exact, tol=kw.pop("tol", TOL), **kw)


@pytest.fixture(scope="module")
def progs():
    return hankel_programs()


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def tenths(a, b):
    e = np.max(np.abs(np.asarray(a, np.float64) - b).reshape(len(a), -1), axis=1) / np.max(np.abs(b))
    return e.reshape(10, -1).max(axis=1)


def test_program_records_mode_N_and_per_filter_error(progs, tmp_path):
    exact, prog = progs
    s = prog.spectral
    assert exact.spectral is None and s["mode"] == "lds" and s["buffered"] and s["tol"] == TOL
    assert len(s["n"]) == CFG.n_layers and all(1 <= n < CFG.seq_len for n in s["n"])
    assert max(s["error"]) <= TOL
    err = prog.arrays["lds.err"]
    assert err.shape == (CFG.n_layers, CFG.k_max) and err.max() <= TOL
    # save / load keeps everything; an exact program's file has no spectral record at all
    path = prog.save(tmp_path / "lds.essm")
    back = StreamProgram.load(path)
    assert back.spectral == s
    assert all(np.array_equal(back.arrays[k], prog.arrays[k]) for k in prog.arrays)
    assert "spectral" not in exact.metadata()


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_numba_kernel_equals_reference_every_K(progs, dtype, tol):
    _, prog = progs
    rng = np.random.default_rng(1)
    T = 3 * CFG.seq_len
    X = rng.standard_normal((T, 2, CFG.d_in)).astype(dtype)
    Ks = rng.choice(BUDGETS, size=(T, 2))                            # per step and per stream
    fast = StreamEngine(prog, batch=2, dtype=dtype).run(X, Ks)
    ref = StreamEngine(prog, batch=2, dtype=dtype, kernel="ref").run(X, Ks)
    e = rel(fast, ref)
    print(f"{np.dtype(dtype).name}: numba vs reference {e:.1e}")
    assert e <= tol


@pytest.mark.parametrize("K", BUDGETS + ["jumps"])
def test_lds_engine_tracks_exact_engine_100L_float32_white_noise(progs, K):
    exact, prog = progs
    rng = np.random.default_rng(2)
    T = 100 * CFG.seq_len
    X = rng.standard_normal((T, CFG.d_in)).astype(np.float32)
    Ks = rng.choice(BUDGETS, size=T) if K == "jumps" else K     # K jumps at random every step
    ye = StreamEngine(exact, dtype=np.float32).run(X, Ks).astype(np.float64)
    yl = StreamEngine(prog, dtype=np.float32).run(X, Ks)
    e, t = rel(yl, ye), tenths(yl, ye)
    print(f"K={K}: LDS vs exact {e:.1e} (first/last tenth {t[0]:.1e}/{t[-1]:.1e})")
    assert e <= TOL
    assert t[-1] <= 2 * t[0] + 1e-6


def test_lds_engine_tracks_exact_on_a_task_stream_with_budget_jumps():
    """The digits task's sequences back to back as one long stream (the kind a deployed model sees),
    K switching every 37 steps."""
    sk = pytest.importorskip("sklearn.datasets")
    cfg = ESSMConfig(d_in=1, d_out=10, d_model=8, n_layers=2, seq_len=64, k_max=16, d_gate=8)
    exact, prog = hankel_programs(cfg, seed=3)
    X = (sk.load_digits().data / 16.0).reshape(-1, 1)[:100 * 64].astype(np.float32)   # 100 L steps
    Ks = np.repeat(np.resize(BUDGETS, len(X) // 37 + 1), 37)[:len(X)]
    ye = StreamEngine(exact, dtype=np.float32).run(X, Ks).astype(np.float64)
    yl = StreamEngine(prog, dtype=np.float32).run(X, Ks)
    e, t = rel(yl, ye), tenths(yl, ye)
    print(f"digits stream: LDS vs exact {e:.1e} (first/last tenth {t[0]:.1e}/{t[-1]:.1e})")
    assert e <= TOL and t[-1] <= 2 * t[0] + 1e-6


def test_per_stream_budgets_snapshot_restore_reset(progs):
    _, prog = progs
    rng = np.random.default_rng(4)
    T, B = 150, 3
    X = rng.standard_normal((T, B, CFG.d_in)).astype(np.float32)
    Ks = np.array([1, 7, 16])
    eng = StreamEngine(prog, batch=B, dtype=np.float32)
    Y = eng.run(X, Ks).copy()
    for b in range(B):       # each stream = its own engine (float32 sums group differently in B=3)
        yb = StreamEngine(prog, batch=1, dtype=np.float32).run(X[:, b], int(Ks[b]))
        assert rel(Y[:, b], yb.astype(np.float64)) <= 2e-5
    eng.reset()
    eng.run(X[:100], Ks)
    snap = eng.snapshot()
    tail = eng.run(X[100:], Ks).copy()
    assert np.array_equal(tail, Y[100:])
    eng.restore(snap)                                           # the ladder states and ring come back
    assert np.array_equal(eng.run(X[100:], Ks), Y[100:])
    eng.reset()
    assert np.array_equal(eng.run(X, Ks), Y)
    # step == run, bit for bit
    eng.reset()
    steps = np.stack([eng.step(X[t], Ks).copy() for t in range(20)])
    assert np.array_equal(steps, Y[:20])


def test_ladder_engine_memory_and_no_buffer_variant():
    exact, prog = hankel_programs()
    _, nb = hankel_programs(tol=2e-2, buffered=False)
    e_ex, e_l, e_nb = (StreamEngine(p, batch=2) for p in (exact, prog, nb))
    d, L, nl = CFG.d_model, CFG.seq_len, CFG.n_layers
    assert e_ex.layout.state_sizes["hist"] == nl * 2 * d * 2 * L and e_ex.layout.state_sizes["lds"] == 0
    assert e_l.layout.state_sizes["hist"] == 0
    assert e_l.layout.state_sizes["lring"] == nl * 2 * L * d                 # L inputs, not 2L
    assert e_l.layout.state_sizes["lds"] == nl * 2 * max(prog.spectral["n"]) * d
    assert e_nb.layout.state_sizes["lring"] == 0 and not nb.spectral["buffered"]   # O(N d) memory
    assert e_l.layout.shapes["phir"] == (0,) and "phir" in prog.arrays   # in the file, not in W
    assert e_l.layout.n_w < e_ex.layout.n_w
    rng = np.random.default_rng(5)
    X = rng.standard_normal((20 * L, CFG.d_in)).astype(np.float32)
    e = rel(StreamEngine(nb).run(X, 16), StreamEngine(exact).run(X, 16).astype(np.float64))
    print(f"no-buffer variant (filter tol 2e-2): {e:.1e} vs exact")
    assert e <= 0.2                                             # ~1e-2 class, labelled as such


def test_bad_lds_programs_are_refused(progs):
    _, prog = progs
    arrays = {k: np.array(v) for k, v in prog.arrays.items()}
    rec = dict(prog.spectral)
    with pytest.raises(ProgramError, match="spectral mode"):
        StreamProgram(prog.cfg, arrays, spectral={**rec, "mode": "fft"})
    with pytest.raises(ProgramError, match="n must list"):
        StreamProgram(prog.cfg, arrays, spectral={**rec, "n": [3]})
    with pytest.raises(ProgramError, match="unexpected arrays"):
        StreamProgram(prog.cfg, arrays)                          # LDS arrays without a record
    bad = dict(arrays)
    bad["lds.a"] = arrays["lds.a"].copy()
    bad["lds.a"][0, 0] = 1.0
    with pytest.raises(ProgramError, match="poles"):
        StreamProgram(prog.cfg, bad, spectral=rec)
    short = {**rec, "n": [rec["n"][0] - 1, rec["n"][1]]}        # the dropped section is not padding
    with pytest.raises(ProgramError, match="padding"):
        StreamProgram(prog.cfg, arrays, spectral=short)
    with pytest.raises(Exception, match="already in LDS"):
        lds.lds_program(prog)


@pytest.mark.slow
def test_trained_model_accuracy_unchanged_and_cli(tmp_path):
    """A small digits model trained for ~30 s (~58 % test accuracy at K=32; the documented run in
    docs/LDS.md uses a 2000-step model): float32 engines, exact vs LDS (tol 1e-3), every one of the
    1797 sequences (train + test: one flipped decision = 0.06 pp) as a parallel stream; accuracy
    changes by <= 0.2 pp at K = 1, 4, 32."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from essm_stream.cli import main
    from essm_stream.compile import compile_model
    from essm_stream.tasks import make_task
    from essm_stream.train import TrainConfig, train
    torch.set_num_threads(1)
    ds = make_task("digits", seed=0)
    tc = TrainConfig(task="digits", model=dict(d_model=16, n_layers=2, d_gate=8), steps=300, batch_size=32,
                     lr=1e-2, warmup_steps=10, k_dist="linear", eval_every=1000,
                     out_dir=str(tmp_path / "run"), device="cpu")
    model = train(tc, ds, progress=False)["model"].eval()
    exact, prog = compile_model(model), compile_model(model, spectral="lds", tol=1e-3)
    X = np.concatenate([ds.X_train, ds.X_test]).transpose(1, 0, 2).copy()   # (T, B, 1): a stream each
    y = np.concatenate([ds.y_train, ds.y_test])
    for K in (1, 4, 32):
        accs = []
        for p in (exact, prog):
            Y = StreamEngine(p, batch=X.shape[1], dtype=np.float32).run(X, K)
            accs.append(float(np.mean(Y[-1].argmax(-1) == y)))
        print(f"K={K}: exact {accs[0]:.4f}, LDS {accs[1]:.4f} (N {prog.spectral['n']})")
        assert abs(accs[1] - accs[0]) <= 0.002
    # the CLI maps --spectral lds / --tol onto the same compile, verifying against the model
    out = tmp_path / "m.essm"
    assert main(["compile", str(tmp_path / "run" / "model.safetensors"), "-o", str(out),
                 "--spectral", "lds", "--tol", "1e-3", "--verify", "64"]) == 0
    assert StreamProgram.load(out).spectral["n"] == prog.spectral["n"]
    assert main(["compile", str(tmp_path / "run" / "model.safetensors"), "--weighted"]) == 2


def test_weighted_fit_pads_layers_to_the_largest_N():
    """Weights (e.g. ||M_k||) make each layer its own fit; here layer 1 weighs its last filters 100x,
    so it needs a longer ladder; layer 0's is zero-padded at the end of its chain (never reaching an
    output): the engine still equals its reference and tracks the exact engine."""
    exact, _ = hankel_programs(seed=6)
    w = np.ones((CFG.n_layers, CFG.k_max))
    w[1, -4:] = 100.0
    extra, rec = lds.fit_layers(exact.arrays["phir"], exact.arrays["sigma"], tol=TOL, weights=w)
    arrays = {**{k: np.array(v) for k, v in exact.arrays.items()}, **extra}
    prog = StreamProgram(CFG, arrays, spectral=rec)
    n = rec["n"]
    print(f"weighted: N per layer {n}")
    assert rec["weighted"] and n[1] > n[0] and max(rec["error"]) <= TOL
    assert not np.any(prog.arrays["lds.a"][0, n[0]:]) and not np.any(prog.arrays["lds.C"][0, :, n[0]:])
    rng = np.random.default_rng(7)
    X = rng.standard_normal((3 * CFG.seq_len, CFG.d_in))
    Ks = rng.choice(BUDGETS, size=len(X))
    y = StreamEngine(prog, dtype=np.float64).run(X, Ks)
    assert rel(y, StreamEngine(prog, dtype=np.float64, kernel="ref").run(X, Ks)) <= 1e-12
    assert rel(y, StreamEngine(exact, dtype=np.float64).run(X, Ks)) <= TOL


@pytest.mark.parametrize("buffered", [True, False])
def test_overflowing_frame_is_taken_back_in_lds_mode(buffered):
    """A finite but huge frame overflows inside the step: the ladder states and the ring row come
    back exactly (state as before the frame), later outputs equal an engine that never saw it, and
    nan_policy='zero' skips it in the numba kernel and in the numpy twin alike."""
    from essm_stream.engine import NonFiniteOutputError
    _, prog = hankel_programs(seed=8, tol=TOL if buffered else 2e-2, buffered=buffered)
    W = prog.arrays["inp.W"]
    big = (np.finfo(np.float32).max * 0.9 * np.sign(W[0])).astype(np.float32)
    rng = np.random.default_rng(9)
    X = rng.standard_normal((2 * CFG.seq_len, CFG.d_in)).astype(np.float32)
    eng, clean = StreamEngine(prog), StreamEngine(prog)
    eng.run(X[:70], 5)
    clean.run(X[:70], 5)
    before = eng.snapshot()
    with pytest.raises(NonFiniteOutputError, match="taken back"):
        eng.step(big, 5)
    after = eng.snapshot()
    assert np.array_equal(after.state, before.state) and np.array_equal(after.ist[:3], before.ist[:3])
    assert np.array_equal(eng.run(X[70:], 5), clean.run(X[70:], 5))
    # nan_policy="zero": the frame is skipped (outputs 0), numba and the numpy twin agree
    big64 = np.finfo(np.float64).max * 0.9 * np.sign(W[0])
    Xb = np.concatenate([X[:70], big64[None], X[70:90]]).astype(np.float64)
    fast = StreamEngine(prog, nan_policy="zero", dtype=np.float64)
    twin = StreamEngine(prog, nan_policy="zero", kernel="ref", dtype=np.float64)
    with np.errstate(all="ignore"):
        Yr = twin.run(Xb, 5)
    Yf = fast.run(Xb, 5)
    assert fast.skipped_frames == twin.skipped_frames == 1 and np.all(Yf[70] == 0)
    assert np.allclose(Yr, Yf, rtol=0, atol=1e-12)
    ref = StreamEngine(prog, dtype=np.float64).run(np.delete(Xb, 70, axis=0), 5)
    assert np.array_equal(np.delete(Yf, 70, axis=0), ref)
