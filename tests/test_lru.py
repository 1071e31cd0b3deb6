"""The LRU peer (essm_stream/lru.py): torch parallel form and streaming step against the numpy float64
loop reference (lru_reference.py) within 1e-9, checkpoints, validation, and the training hook."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from essm_stream.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from essm_stream.errors import BudgetError, ConfigError, ProgramError, ShapeError  # noqa: E402
from essm_stream.lru import LRULayer, LRUModel, lru_scan  # noqa: E402
from essm_stream.lru_config import LRUConfig, macs_per_step_lru  # noqa: E402
from essm_stream.lru_reference import lru_layer_ref, lru_model_ref  # noqa: E402

TOL64 = 1e-9   # float64 torch vs float64 numpy loop: measured ~2e-15
TOL32 = 1e-4   # float32 torch vs float64 reference (outputs of order 1)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = LRUConfig(**{**dict(d_in=3, d_out=5, d_model=8, n_layers=2, state=6, seq_len=16), **kw})
    m = LRUModel(cfg).double().eval()
    # randomise LayerNorm / biases so that no identity weight hides a transposition
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith(("ln1.weight", "ln2.weight", "ln_f.weight")):
                p.add_(0.3 * torch.randn_like(p))
            elif n.endswith(("ln1.bias", "ln2.bias", "ln_f.bias")):
                p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("kw", [dict(), dict(mlp=False), dict(head="mean", pool_window=4),
                                dict(states=(3, 7), n_layers=2), dict(n_layers=1, state=1)])
def test_model_matches_reference_float64(kw):
    m = _model(**kw)
    x = torch.randn(2, 40, 3, dtype=torch.float64)
    y = m(x).detach().numpy()
    w = m.export_weights()
    err = max(np.abs(y[b] - lru_model_ref(x[b].numpy(), w, m.cfg)).max() for b in range(2))
    print(f"LRU model torch float64 vs reference: max abs err {err:.2e} (tol {TOL64})")
    assert err <= TOL64


def test_layer_matches_reference_across_chunks(monkeypatch):
    """T > chunk: the chunked Toeplitz form chains chunks exactly, whatever the chunk size."""
    torch.manual_seed(1)
    layer = LRULayer(4, 5, r_min=0.9, r_max=0.999).double()
    u = torch.randn(1, 300, 4, dtype=torch.float64)
    ref, x_last = lru_layer_ref(u[0].numpy(), layer.export_weights())
    for chunk in (1, 7, 64, 128, 512):
        monkeypatch.setattr("essm_stream.lru.SCAN_CHUNK", chunk)
        y, xT = layer(u, return_state=True)
        err = np.abs(y[0].detach().numpy() - ref).max()
        assert err <= TOL64, (chunk, err)
        assert np.abs(xT[0].detach().numpy() - x_last).max() <= TOL64


def test_scan_with_initial_state_equals_split_sequence():
    torch.manual_seed(2)
    v = torch.randn(2, 50, 3, dtype=torch.complex128)
    log_lam = torch.complex(-torch.rand(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64))
    full = lru_scan(v, log_lam)
    first = lru_scan(v[:, :20], log_lam)
    second = lru_scan(v[:, 20:], log_lam, x0=first[:, -1])
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-12, rtol=0)


def test_streaming_step_equals_parallel_forward():
    m = _model(3)
    x = torch.randn(3, 70, 3, dtype=torch.float64)
    y = m(x)
    st, ys = m.init_state(3), []
    for t in range(70):
        yt, st = m.step(x[:, t], st)
        ys.append(yt)
    err = (torch.stack(ys, 1) - y).abs().max().item()
    assert err <= TOL64, err


def test_float32_close_to_reference():
    m = _model(4).float()
    x = torch.randn(1, 64, 3)
    err = np.abs(m(x)[0].detach().double().numpy() - lru_model_ref(x[0].double().numpy(), m.export_weights(), m.cfg)).max()
    assert err <= TOL32, err


def test_stable_parametrisation_and_gamma():
    layer = LRULayer(4, 32, r_min=0.0, r_max=0.999)
    lam = torch.exp(layer.log_lambda())
    assert (lam.abs() < 1).all()
    g = layer.gamma()
    assert torch.allclose(g ** 2 + lam.abs() ** 2, torch.ones_like(g), atol=1e-6)
    with torch.no_grad():   # any real ν, θ stays stable
        layer.nu.fill_(-30.0)
    assert (torch.exp(layer.log_lambda()).abs() <= 1).all() and torch.isfinite(layer.gamma()).all()


def test_budget_and_shape_validation():
    m = _model()
    x = torch.randn(1, 5, 3, dtype=torch.float64)
    assert torch.equal(m(x), m(x, 1)) and torch.equal(m(x), m(x, torch.ones(5, dtype=torch.long)))
    for bad in (2, 0, 1.0, torch.full((5,), 2)):
        with pytest.raises(BudgetError, match="no runtime budget"):
            m(x, bad)
    with pytest.raises(ShapeError):
        m(torch.randn(1, 5, 4, dtype=torch.float64))
    with pytest.raises(ShapeError):
        m.blocks[0].lru(torch.randn(5, 8))


def test_config_validation_and_roundtrip():
    cfg = LRUConfig(d_in=1, d_out=2, n_layers=2, states=(4, 3))
    assert LRUConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.layer_states() == (4, 3) and cfg.k_max == 1 and not cfg.budget_dropout
    for bad in (dict(states=(4,)), dict(states=(4, 0)), dict(r_min=0.9, r_max=0.5), dict(r_max=1.0),
                dict(state=0), dict(head="max"), dict(d_model=2.5)):
        with pytest.raises(ConfigError):
            LRUConfig(**{**dict(d_in=1, d_out=2, n_layers=2), **bad})
    with pytest.raises(ConfigError, match="unknown"):
        LRUConfig.from_dict({"d_in": 1, "d_out": 2, "k_max": 4})
    with pytest.raises(ConfigError):
        LRUModel(object())


def test_macs_count():
    cfg = LRUConfig(d_in=1, d_out=10, d_model=32, n_layers=2, states=(8, 4))
    per = lambda N: 4 * N + 4 * N * 32 + 32 + 2 * 2 * 32 * 32  # noqa: E731
    assert macs_per_step_lru(cfg) == 32 + 320 + per(8) + per(4)


def test_set_system_roundtrip_keeps_outputs():
    """system() -> set_system() (the path a reduction takes) reproduces the layer exactly."""
    torch.manual_seed(5)
    layer = LRULayer(4, 6).double()
    u = torch.randn(2, 30, 4, dtype=torch.float64)
    y0 = layer(u).detach()
    lam, Bt, C = layer.system()
    mapping = layer.set_system(lam, Bt, C)
    assert len(mapping) == 6 and all(o is not n for o, n in mapping.items())
    assert (layer(u).detach() - y0).abs().max().item() <= 1e-12
    with pytest.raises(ConfigError):
        layer.set_system(np.array([1.01] * 6), Bt, C)
    with pytest.raises(ShapeError):
        layer.set_system(lam[:5], Bt, C)


def test_checkpoint_roundtrip_reduced_model(tmp_path):
    m = _model(6, states=(5, 2)).float()
    save_checkpoint(tmp_path / "m.safetensors", m, train_state={"step": 1})
    m2, meta = load_checkpoint(tmp_path / "m.safetensors")
    assert isinstance(m2, LRUModel) and m2.cfg == m.cfg and m2.cfg.layer_states() == (5, 2)
    x = torch.randn(2, 9, 3)
    assert torch.equal(m(x), m2(x))
    # a tampered config (more states than tensors) is refused with a ProgramError
    from safetensors import safe_open
    from safetensors.torch import save
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        tensors, md = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    cfgd = json.loads(md["config"])
    cfgd["states"] = [6, 2]
    md["config"] = json.dumps(cfgd)
    (tmp_path / "bad.safetensors").write_bytes(save(tensors, metadata=md))
    with pytest.raises(ProgramError, match="size mismatch"):
        load_checkpoint(tmp_path / "bad.safetensors")
    md["model_kind"] = "mamba"
    (tmp_path / "bad2.safetensors").write_bytes(save(tensors, metadata=md))
    with pytest.raises(ProgramError, match="model_kind"):
        load_checkpoint(tmp_path / "bad2.safetensors")


def _tiny_ds():
    from essm_stream.tasks import SequenceDataset
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 12, 2)).astype(np.float32)
    y = (X[:, :, 0].sum(1) > 0).astype(np.int64)
    return SequenceDataset(X[:48], y[:48], X[48:], y[48:], 2, "tiny")


@pytest.mark.slow
def test_training_with_compression_records_ranks_and_resumes(tmp_path):
    from essm_stream.train import TrainConfig, train
    ds = _tiny_ds()
    kw = dict(task="npz", model=dict(d_model=8, n_layers=2, state=12), model_kind="lru", steps=10,
              batch_size=16, eval_every=5, ckpt_every=5, out_dir=str(tmp_path / "r"),
              compress={"rank": 3, "at": [0.2, 0.6]})
    s = train(TrainConfig(**kw), ds=ds, progress=False)
    assert s["model"].cfg.layer_states() == (3, 3)
    assert [c["step"] for c in s["compress"]] == [2, 6]
    assert [c["reduced"] for c in s["compress"]] == [[True, True], [False, False]]  # rank 3 already
    assert all(h["ranks"] == [3, 3] for h in s["history"])
    summ = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summ["model_kind"] == "lru" and summ["compress"][0]["ranks"] == [3, 3]
    m2, meta = load_checkpoint(tmp_path / "r" / "model.safetensors")
    assert m2.cfg.layer_states() == (3, 3) and len(meta["train"]["compress"][0]["hsv"][0]) == 12
    # resume from the reduced checkpoint at step 10 of a 12-step run
    s2 = train(TrainConfig(**{**kw, "steps": 12, "resume": True}), ds=ds, progress=False)
    assert s2["model"].cfg.layer_states() == (3, 3) and s2["history"][-1]["step"] == 12


def test_train_config_rejects_compress_for_essm():
    from essm_stream.train import TrainConfig
    with pytest.raises(ConfigError, match="lru"):
        TrainConfig(compress={"rank": 3})
    with pytest.raises(ConfigError):
        TrainConfig(model_kind="mamba")


def test_cli_flags(tmp_path, capsys):
    from essm_stream.cli import main
    assert main(["train", "--model", "lru", "--compress", "size=3", "--out", str(tmp_path)]) == 2
    assert "energy=F or rank=N" in capsys.readouterr().err
    assert main(["train", "--compress", "rank=3", "--out", str(tmp_path)]) == 2
    from essm_stream.commands.train import train_config_from_args
    from essm_stream.cli import build_parser
    a = build_parser().parse_args(["train", "--model", "lru", "--state", "16", "--compress", "energy=0.99", "--at", "0.1,0.3"])
    tc = train_config_from_args(a)
    assert tc.model_kind == "lru" and tc.model["state"] == 16
    assert tc.compress == {"energy": 0.99, "rank": None, "at": [0.1, 0.3]}


def test_dataclass_replace_keeps_kind():
    cfg = dataclasses.replace(LRUConfig(d_in=1, d_out=2), states=(2, 2))
    assert cfg.kind == "lru" and cfg.layer_states() == (2, 2)
