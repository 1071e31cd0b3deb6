"""LRU programs on the streaming engine without torch (the runtime-only CI stage): weights drawn in
LRUModel.export_weights() layout, compiled by kernels_lru.compile_lru_weights, stepped by
StreamEngine (numba and reference kernels) and held to the float64 loop reference ≤ 1e-9;
chunked == per-step, snapshot / restore, bad input leaves the state intact."""
from __future__ import annotations

import numpy as np
import pytest

from essm_stream.engine import StreamEngine
from essm_stream.errors import ConfigError, NonFiniteInputError, ProgramError, ShapeError
from essm_stream.kernels_lru import compile_lru_weights
from essm_stream.lru_config import LRUConfig
from essm_stream.lru_reference import lru_model_ref
from essm_stream.program import StreamProgram

TOL64 = 1e-9


def _weights(cfg: LRUConfig, seed=0) -> dict:
    """Random weights in export_weights() layout (no torch needed)."""
    rng = np.random.default_rng(seed)
    d, w = cfg.d_model, {}
    w["inp.W"], w["inp.b"] = rng.normal(size=(d, cfg.d_in)), rng.normal(size=d) * 0.1
    for i, N in enumerate(cfg.layer_states()):
        p = f"blocks.{i}."
        w[p + "ln1.g"], w[p + "ln1.b"] = 1 + 0.2 * rng.normal(size=d), 0.1 * rng.normal(size=d)
        w[p + "lru.nu"] = np.log(-np.log(rng.uniform(0.5, 0.999, N)))
        w[p + "lru.theta"] = np.log(rng.uniform(0.01, np.pi, N))
        for k in ("B_re", "B_im"):
            w[p + "lru." + k] = rng.normal(size=(N, d)) / np.sqrt(2 * d)
        for k in ("C_re", "C_im"):
            w[p + "lru." + k] = rng.normal(size=(d, N)) / np.sqrt(N)
        w[p + "lru.D"] = rng.normal(size=d)
        if cfg.mlp:
            dh = cfg.mlp_ratio * d
            w[p + "ln2.g"], w[p + "ln2.b"] = 1 + 0.2 * rng.normal(size=d), 0.1 * rng.normal(size=d)
            w[p + "fc1.W"], w[p + "fc1.b"] = rng.normal(size=(dh, d)) / np.sqrt(d), 0.1 * rng.normal(size=dh)
            w[p + "fc2.W"], w[p + "fc2.b"] = rng.normal(size=(d, dh)) / np.sqrt(dh), 0.1 * rng.normal(size=d)
    w["ln_f.g"], w["ln_f.b"] = 1 + 0.2 * rng.normal(size=d), 0.1 * rng.normal(size=d)
    w["out.W"], w["out.b"] = rng.normal(size=(cfg.d_out, d)), 0.1 * rng.normal(size=cfg.d_out)
    return w


CFGS = [LRUConfig(d_in=3, d_out=4, d_model=8, n_layers=2, states=(6, 3)),
        LRUConfig(d_in=1, d_out=2, d_model=5, n_layers=1, state=4, mlp=False)]


def _program(cfg, seed=0):
    w = _weights(cfg, seed)
    return StreamProgram(cfg, compile_lru_weights(w, cfg)), w


@pytest.mark.parametrize("cfg", CFGS)
@pytest.mark.parametrize("kernel", ["numba", "ref"])
def test_engine_matches_reference_float64(cfg, kernel):
    prog, w = _program(cfg)
    X = np.random.default_rng(1).normal(size=(50, 2, cfg.d_in))
    Y = StreamEngine(prog, batch=2, dtype=np.float64, kernel=kernel).run(X, 1)
    err = max(np.abs(Y[:, b] - lru_model_ref(X[:, b], w, cfg)).max() for b in range(2))
    print(f"engine ({kernel}) float64 vs LRU reference: {err:.2e} (tol {TOL64})")
    assert err <= TOL64


def test_chunked_equals_per_step_and_snapshot_restore(tmp_path):
    cfg = CFGS[0]
    prog, _ = _program(cfg, 2)
    prog.save(tmp_path / "p.essm")
    prog = StreamProgram.load(tmp_path / "p.essm")
    X = np.random.default_rng(3).normal(size=(40, cfg.d_in))
    a = StreamEngine(prog, dtype=np.float64)
    Y_block = np.concatenate([a.run(X[:13], 1), a.run(X[13:], 1)])
    b = StreamEngine(prog, dtype=np.float64)
    Y_step = np.stack([b.step(X[t], 1).copy() for t in range(40)])
    assert np.array_equal(Y_block, Y_step)
    a.reset()
    a.run(X[:20], 1)
    snap = a.snapshot()
    y1 = a.run(X[20:], 1).copy()
    a.restore(snap)
    assert np.array_equal(a.run(X[20:], 1), y1)


def test_bad_input_leaves_state():
    cfg = CFGS[1]
    prog, _ = _program(cfg)
    e = StreamEngine(prog, dtype=np.float64)
    e.run(np.ones((5, 1)), 1)
    snap = e.snapshot()
    with pytest.raises(NonFiniteInputError):
        e.step(np.array([np.nan]), 1)
    with pytest.raises(ShapeError):
        e.step(np.ones(3), 1)
    after = e.snapshot()
    assert np.array_equal(after.section("lru_x"), snap.section("lru_x")) and np.any(snap.section("lru_x") != 0)
    assert np.array_equal(after.ist, snap.ist)
    assert np.array_equal(e.run(np.ones((2, 1)), 1), StreamEngine(prog, dtype=np.float64).run(np.ones((7, 1)), 1)[5:])
    with pytest.raises(ShapeError):   # weights of another state size
        compile_lru_weights(_weights(cfg), LRUConfig(d_in=1, d_out=2, d_model=5, n_layers=1, state=5, mlp=False))
    with pytest.raises((ConfigError, ProgramError)):
        StreamProgram(cfg, {})


@pytest.mark.parametrize("kernel,dtype", [("numba", np.float32), ("numba", np.float64), ("ref", np.float64)])
def test_overflowing_frame_is_taken_back_with_the_lru_state(kernel, dtype):
    """A finite frame whose input projection overflows: the LRU states are put back too, and later
    outputs equal an engine that never saw it (the engine's overflow contract, layer kind lru). The
    reference kernel computes in float64, so a float32-max frame does not overflow there."""
    from essm_stream.engine import NonFiniteOutputError
    cfg = CFGS[0]
    prog, _ = _program(cfg, 5)
    W = prog.arrays["inp.W"]
    bad = (np.finfo(dtype).max * 0.9 * np.sign(W[0])).astype(dtype)
    X = np.random.default_rng(2).standard_normal((12, cfg.d_in)).astype(dtype)
    eng = StreamEngine(prog, dtype=dtype, kernel=kernel)
    clean = StreamEngine(prog, dtype=dtype, kernel=kernel)
    eng.run(X[:6], 1)
    clean.run(X[:6], 1)
    before = eng.snapshot()
    with np.errstate(all="ignore"), pytest.raises(NonFiniteOutputError):
        eng.step(bad, 1)
    after = eng.snapshot()
    assert np.array_equal(after.section("lru_x"), before.section("lru_x")) and eng.steps == 6
    assert np.array_equal(eng.run(X[6:], 1), clean.run(X[6:], 1))
