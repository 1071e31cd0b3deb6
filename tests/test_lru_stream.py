"""LRUStreamer (numba kernel, torch-free) against the float64 reference and the torch model:
float64 ≤ 1e-9, chunked == per-step, snapshot / restore, bad input leaves the state intact."""
from __future__ import annotations

import numpy as np
import pytest

from essm_stream.errors import ConfigError, NonFiniteInputError, ShapeError
from essm_stream.kernels_lru import LRUStreamer
from essm_stream.lru_config import LRUConfig
from essm_stream.lru_reference import lru_model_ref

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


@pytest.mark.parametrize("cfg", CFGS)
@pytest.mark.parametrize("reference", [False, True])
def test_streamer_matches_reference_float64(cfg, reference):
    w = _weights(cfg)
    X = np.random.default_rng(1).normal(size=(50, 2, cfg.d_in))
    s = LRUStreamer(w, cfg, batch=2, dtype=np.float64, reference=reference)
    Y = s.run(X)
    err = max(np.abs(Y[:, b] - lru_model_ref(X[:, b], w, cfg)).max() for b in range(2))
    print(f"LRUStreamer float64 vs reference: {err:.2e} (tol {TOL64})")
    assert err <= TOL64


def test_chunked_equals_per_step_and_snapshot_restore():
    cfg = CFGS[0]
    w = _weights(cfg, 2)
    X = np.random.default_rng(3).normal(size=(40, 1, cfg.d_in))
    a = LRUStreamer(w, cfg, dtype=np.float64)
    Y_block = np.concatenate([a.run(X[:13]), a.run(X[13:])])
    b = LRUStreamer(w, cfg, dtype=np.float64)
    Y_step = np.stack([b.step(X[t]) for t in range(40)])
    assert np.array_equal(Y_block, Y_step) and a.steps == b.steps == 40
    a.reset()
    a.run(X[:20])
    snap = a.snapshot()
    y1 = a.run(X[20:])
    a.restore(snap)
    assert np.array_equal(a.run(X[20:]), y1)
    # float32 path stays close to float64
    c = LRUStreamer(w, cfg, dtype=np.float32)
    assert np.abs(c.run(X) - Y_step).max() <= 1e-4


def test_torch_model_equals_streamer():
    torch = pytest.importorskip("torch")
    from essm_stream.lru import LRUModel
    torch.manual_seed(0)
    cfg = LRUConfig(d_in=2, d_out=3, d_model=6, n_layers=2, states=(5, 2))
    m = LRUModel(cfg).double().eval()
    x = torch.randn(1, 30, 2, dtype=torch.float64)
    y = m(x)[0].detach().numpy()
    s = LRUStreamer(m.export_weights(), cfg, dtype=np.float64)
    assert np.abs(s.run(x[0].numpy()) - y).max() <= TOL64


def test_bad_input_leaves_state():
    cfg = CFGS[1]
    s = LRUStreamer(_weights(cfg), cfg, dtype=np.float64)
    s.run(np.ones((5, 1)))
    snap = s.snapshot()
    with pytest.raises(NonFiniteInputError):
        s.step(np.array([np.nan]))
    with pytest.raises(ShapeError):
        s.step(np.ones(3))
    after = s.snapshot()
    assert np.array_equal(after.x_re, snap.x_re) and after.steps == 5
    with pytest.raises(ShapeError):
        s.restore(type(snap)(np.zeros((2, 2, 2)), snap.x_im, 0))
    with pytest.raises(ConfigError):
        s.restore(type(snap)(snap.x_re * np.nan, snap.x_im, 0))
    with pytest.raises(ConfigError):
        LRUStreamer(_weights(cfg), LRUConfig(d_in=1, d_out=2, d_model=5, n_layers=1, state=4, mlp=False,
                                             head="mean", pool_window=3))
    with pytest.raises(ShapeError):   # weights of another state size
        LRUStreamer(_weights(cfg), LRUConfig(d_in=1, d_out=2, d_model=5, n_layers=1, state=5, mlp=False))
