"""The torch layer and model held to the plain float64 numpy reference (direct-sum convolution).

Tolerances: float64 <= 1e-9 relative to the output's max magnitude; float32 <= 2e-4 of it
(FFT rounding over L taps and the softmax in single precision).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from essm_stream.config import ESSMConfig
from essm_stream.errors import BudgetError, ConfigError, ShapeError
from essm_stream.model import ESSMLayer, ESSMModel
from essm_stream.reference import layer_ref, mixture_weights_ref, model_ref

BUDGETS = [1, 2, 3, 4, 7, 32]


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def make_layer(d=6, L=32, k_max=32, variant="essm", seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    layer = ESSMLayer(d_model=d, seq_len=L, k_max=k_max, d_gate=8, variant=variant).to(dtype)
    with torch.no_grad():  # non-zero biases so that every term of Eq. 8c is exercised
        if layer.gated:
            layer.b1.normal_()
            layer.b2.normal_()
    return layer


@pytest.fixture(scope="module")
def layer64():
    return make_layer()


@pytest.mark.parametrize("K", BUDGETS)
@pytest.mark.parametrize("T", [20, 32, 45])  # T < L, T = L and T > L (sliding window)
def test_layer_matches_reference_float64(layer64, K, T):
    u = torch.randn(2, T, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(K + T))
    y = layer64(u, K).detach().numpy()
    w = layer64.export_weights()
    for b in range(2):
        err = rel_err(y[b], layer_ref(u[b].numpy(), w, K))
        assert err <= 1e-9, f"K={K} T={T}: float64 relative error {err:.2e} > 1e-9"


@pytest.mark.parametrize("method", ["fft", "toeplitz"])
@pytest.mark.parametrize("T", [20, 32, 77])
def test_both_convolution_paths_match_reference(layer64, method, T):
    """FFT (long sequences) and Toeplitz matmul (short ones) are the same operator."""
    u = torch.randn(2, T, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(T))
    layer64.conv_method = method
    try:
        y = layer64(u, torch.randint(1, 33, (T,), generator=torch.Generator().manual_seed(1)))
        K = torch.randint(1, 33, (T,), generator=torch.Generator().manual_seed(1)).numpy()
    finally:
        layer64.conv_method = "auto"
    w = layer64.export_weights()
    for b in range(2):
        err = rel_err(y[b].detach().numpy(), layer_ref(u[b].numpy(), w, K))
        assert err <= 1e-9, f"{method} T={T}: {err:.2e}"


@pytest.mark.parametrize("method", ["fft", "toeplitz"])
@pytest.mark.parametrize("K", BUDGETS)
def test_layer_matches_reference_float32(K, method):
    layer = make_layer(dtype=torch.float32, seed=1)
    layer.conv_method = method
    u = torch.randn(1, 40, 6, generator=torch.Generator().manual_seed(K))
    y = layer(u, K).detach().numpy()
    ref = layer_ref(u[0].numpy().astype(np.float64), layer.export_weights(), K)
    err = rel_err(y[0], ref)
    assert err <= 2e-4, f"K={K}: float32 relative error {err:.2e} > 2e-4"


@pytest.mark.parametrize("variant", ["essm", "base", "gate_only", "dropout_only"])
def test_per_step_budget_schedules(variant):
    layer = make_layer(variant=variant, seed=2)
    T = 50
    g = torch.Generator().manual_seed(3)
    u = torch.randn(3, T, 6, dtype=torch.float64, generator=g)
    per_step = torch.tensor([32, 1, 4, 4, 16, 2] * 8 + [7, 32])            # (T,): jumps up and down
    per_stream = torch.randint(1, 33, (3, T), generator=g)                 # (B, T)
    w = layer.export_weights()
    y1 = layer(u, per_step).detach().numpy()
    y2 = layer(u, per_stream).detach().numpy()
    for b in range(3):
        assert rel_err(y1[b], layer_ref(u[b].numpy(), w, per_step.numpy())) <= 1e-9
        assert rel_err(y2[b], layer_ref(u[b].numpy(), w, per_stream[b].numpy())) <= 1e-9


def test_constant_schedule_equals_int_budget(layer64):
    u = torch.randn(2, 30, 6, dtype=torch.float64)
    a = layer64(u, 5)
    b = layer64(u, torch.full((30,), 5))
    assert torch.equal(a, b)


@pytest.mark.parametrize("variant", ["essm", "gate_only", "base", "dropout_only"])
@pytest.mark.parametrize("K", [1, 3, 17])
def test_inactive_channels_get_exactly_zero_gradient(variant, K):
    layer = make_layer(variant=variant, seed=4, dtype=torch.float32)
    u = torch.randn(2, 40, 6)
    layer(u, K).square().sum().backward()
    g = layer.M.grad
    assert g is not None and torch.count_nonzero(g[:K]) > 0, "active channels must be trained"
    assert torch.count_nonzero(g[K:]) == 0, f"channels k > K={K} received gradient"
    if layer.gated:
        assert torch.count_nonzero(layer.W2.grad[K:]) == 0 and torch.count_nonzero(layer.b2.grad[K:]) == 0
        if K > 1:  # at K=1 alpha is identically 1, so the gate gets no signal at all
            assert torch.count_nonzero(layer.W2.grad[:K]) > 0


@pytest.mark.parametrize("K", BUDGETS)
def test_alpha_is_a_distribution_over_the_active_prefix(layer64, K):
    u = torch.randn(2, 25, 6, dtype=torch.float64)
    Kt = torch.full((2, 25), K)
    alpha = layer64.mixture_weights(u, Kt, 32).detach().numpy()
    assert np.all(alpha >= 0)
    np.testing.assert_allclose(alpha[..., :K].sum(-1), 1.0, rtol=0, atol=1e-12)
    assert np.all(alpha[..., K:] == 0.0)
    w = layer64.export_weights()
    np.testing.assert_allclose(alpha[1, 7], mixture_weights_ref(u[1, 7].numpy(), w, K), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("K", [2, 32])
def test_outputs_do_not_depend_on_the_future(layer64, K):
    T, t0 = 60, 23
    u = torch.randn(1, T, 6, dtype=torch.float64)
    u2 = u.clone()
    u2[:, t0 + 1:] = 100.0 * torch.randn(1, T - t0 - 1, 6, dtype=torch.float64)
    y, y2 = layer64(u, K), layer64(u2, K)
    # FFT rounding of the large future values leaks at the 1e-13 level only; a causality bug is O(1).
    assert rel_err(y2[0, : t0 + 1].detach(), y[0, : t0 + 1].detach()) <= 1e-11
    assert rel_err(y2[0, t0 + 1:].detach(), y[0, t0 + 1:].detach()) > 1e-3


def test_bibo_bound_prop_c1():
    """‖y(t)‖ ≤ (‖D‖op + max_k σ_k^{1/4} ‖M_k‖op ‖Φ_k‖₁) ‖u‖∞ for every K (paper Eq. 12)."""
    for seed in range(3):
        layer = make_layer(seed=10 + seed)
        w = layer.export_weights()
        op = lambda A: np.linalg.norm(A, 2)  # noqa: E731
        bound_c = op(w["D"]) + max(w["sigma"][k] ** 0.25 * op(w["M"][k]) * np.abs(w["phi"][:, k]).sum()
                                   for k in range(32))
        u = torch.randn(4, 32, 6, dtype=torch.float64) * torch.rand(4, 32, 1, dtype=torch.float64) * 5
        u_inf = u.norm(dim=-1).amax(dim=1)                                   # (B,)
        for K in range(1, 33):
            ynorm = layer(u, K).norm(dim=-1).amax(dim=1)                   # (B,)
            assert torch.all(ynorm <= bound_c * u_inf * (1 + 1e-12)), f"bound violated at K={K}"


def small_cfg(**kw):
    base = dict(d_in=3, d_out=4, d_model=8, n_layers=2, seq_len=32, k_max=32, d_gate=8)
    base.update(kw)
    return ESSMConfig(**base)


@pytest.mark.parametrize("cfg_kw", [dict(), dict(head="mean", pool_window=7), dict(mlp=False, variant="base")])
def test_model_matches_reference(cfg_kw):
    cfg = small_cfg(**cfg_kw)
    torch.manual_seed(5)
    model = ESSMModel(cfg).double().eval()
    x = torch.randn(2, 45, 3, dtype=torch.float64)
    w = model.export_weights()
    schedule = torch.tensor(([3] * 10 + [32] * 5 + [1] * 5 + [12] * 10) + [6] * 15)
    for K in (4, 32, schedule):
        y = model(x, K).detach().numpy()
        Kn = K.numpy() if isinstance(K, torch.Tensor) else K
        for b in range(2):
            err = rel_err(y[b], model_ref(x[b].numpy(), w, cfg, Kn))
            assert err <= 1e-9, f"{cfg_kw} K={K}: {err:.2e}"


def test_filters_stay_float64_and_are_stored_in_state_dict():
    model = ESSMModel(small_cfg())
    phi = model.blocks[0].essm.phi.clone()
    model.float()
    assert model.blocks[0].essm.phi.dtype == torch.float64
    assert torch.equal(model.blocks[0].essm.phi, phi)
    assert "blocks.0.essm.phi" in model.state_dict()
    model.double()
    assert model.inp.weight.dtype == torch.float64


def test_bad_budgets_and_shapes_raise_clear_errors(layer64):
    u = torch.randn(2, 10, 6, dtype=torch.float64)
    for bad in (0, 33, -1):
        with pytest.raises(BudgetError, match="out of range"):
            layer64(u, bad)
    with pytest.raises(BudgetError, match="int"):
        layer64(u, 2.5)
    with pytest.raises(BudgetError, match="shape"):
        layer64(u, torch.ones(9, dtype=torch.long))
    with pytest.raises(BudgetError, match=r"\[1, 32\]"):
        layer64(u, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ShapeError, match="expects u"):
        layer64(torch.randn(10, 6, dtype=torch.float64), 2)
    with pytest.raises(ConfigError, match="k_max"):
        ESSMLayer(4, seq_len=16, k_max=32)


def test_config_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(ConfigError, match="unknown ESSMConfig keys"):
        ESSMConfig.from_dict(dict(d_in=1, d_out=1, colour="red"))
    with pytest.raises(ConfigError, match="d_model must be int"):
        ESSMConfig(d_in=1, d_out=1, d_model="64")
    with pytest.raises(ConfigError, match="variant"):
        ESSMConfig(d_in=1, d_out=1, variant="mamba")
    cfg = small_cfg(head="mean", pool_window=3)
    assert ESSMConfig.from_dict(cfg.to_dict()) == cfg
