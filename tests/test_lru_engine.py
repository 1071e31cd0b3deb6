"""Layer kind lru in the program format and the streaming engine, held to the torch model:
float64 ≤ 1e-9 (numba kernel and numpy reference kernel), chunked == per-step, snapshot / restore,
program save / load, CLI compile --verify."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from essm_stream import StreamEngine, StreamProgram, compile_model  # noqa: E402
from essm_stream.errors import BudgetError, ProgramError  # noqa: E402
from essm_stream.lru import LRUModel  # noqa: E402
from essm_stream.lru_config import LRUConfig  # noqa: E402

TOL64 = 1e-9


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = LRUConfig(**{**dict(d_in=3, d_out=4, d_model=8, n_layers=2, states=(6, 3), seq_len=16), **kw})
    m = LRUModel(cfg).double().eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "ln" in n:
                p.add_(0.2 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("kw", [dict(), dict(mlp=False, n_layers=1, states=(5,)), dict(head="mean", pool_window=4)])
@pytest.mark.parametrize("kernel", ["numba", "ref"])
def test_engine_equals_torch_float64(tmp_path, kw, kernel):
    m = _model(**kw)
    x = torch.randn(2, 60, 3, dtype=torch.float64)
    y = m(x).detach().numpy()                                     # (B, T, d_out)
    prog = compile_model(m)
    prog.save(tmp_path / "m.essm")
    prog = StreamProgram.load(tmp_path / "m.essm")
    assert prog.k_max == 1 and isinstance(prog.cfg, LRUConfig) and prog.cfg == m.cfg
    eng = StreamEngine(prog, batch=2, dtype=np.float64, kernel=kernel)
    Y = eng.run(x.numpy().transpose(1, 0, 2), 1)                 # (T, B, d_out)
    err = np.abs(Y.transpose(1, 0, 2) - y).max()
    print(f"engine ({kernel}) float64 vs torch LRU: {err:.2e} (tol {TOL64})")
    assert err <= TOL64


def test_chunked_equals_per_step_and_snapshot_restore():
    m = _model(1)
    prog = compile_model(m)
    X = np.random.default_rng(0).normal(size=(40, 3))
    a = StreamEngine(prog, dtype=np.float64)
    Y_block = np.concatenate([a.run(X[:17], 1), a.run(X[17:], 1)])
    b = StreamEngine(prog, dtype=np.float64)
    Y_step = np.stack([b.step(X[t], 1).copy() for t in range(40)])
    assert np.array_equal(Y_block, Y_step)
    a.reset()
    a.run(X[:25], 1)
    s = a.snapshot()
    y1 = a.run(X[25:], 1).copy()
    a.restore(s)
    assert np.array_equal(a.run(X[25:], 1), y1)
    # float32 engine close to the float64 one
    c = StreamEngine(prog, dtype=np.float32)
    assert np.abs(c.run(X.astype(np.float32), 1) - Y_step).max() <= 1e-4
    with pytest.raises(BudgetError):
        c.step(X[0].astype(np.float32), 2)      # an LRU program has the one budget K = 1


def test_program_rejects_unstable_or_missing_lru_arrays():
    m = _model(2)
    prog = compile_model(m)
    arrays = {k: np.array(v) for k, v in prog.arrays.items()}
    bad = dict(arrays)
    bad["lru.lam_re"] = np.full_like(arrays["lru.lam_re"], 1.5)
    with pytest.raises(ProgramError, match="stable"):
        StreamProgram(prog.cfg, bad)
    missing = {k: v for k, v in arrays.items() if k != "lru.c_im"}
    with pytest.raises(ProgramError, match="missing"):
        StreamProgram(prog.cfg, missing)


def test_cli_compile_verify_and_run(tmp_path, capsys):
    from essm_stream.checkpoint import save_checkpoint
    from essm_stream.cli import main
    m = _model(3).float()
    save_checkpoint(tmp_path / "m.safetensors", m)
    assert main(["compile", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "m.essm"), "--verify", "30"]) == 0
    out = capsys.readouterr().out
    assert "verified K=1" in out
    assert isinstance(StreamProgram.load(tmp_path / "m.essm").cfg, LRUConfig)
    X = np.random.default_rng(0).normal(size=(4, 10, 3)).astype(np.float32)
    np.savez(tmp_path / "x.npz", X=X, y=np.zeros(4, np.int64))
    assert main(["run", str(tmp_path / "m.essm"), str(tmp_path / "x.npz"), "--batch", "2",
                 "-o", str(tmp_path / "y.npy")]) == 0
    Y = np.load(tmp_path / "y.npy")
    ref = m.double()(torch.from_numpy(X).double()).detach().numpy()
    assert Y.shape == ref.shape and np.abs(Y - ref).max() <= 1e-4   # float32 engine
    assert main(["run", str(tmp_path / "m.essm"), str(tmp_path / "x.npz"), "-K", "2"]) == 2
