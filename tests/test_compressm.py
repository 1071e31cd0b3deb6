"""CompreSSM's reduction (essm_stream/compressm.py): closed-form Gramians against scipy's discrete
Lyapunov solver, HSVs against sqrt(eig(PQ)), and the balanced-truncation H∞ bound
‖G − G_r‖∞ ≤ 2 Σ_{k>r} g_k on a frequency grid and on the impulse response."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sl

from essm_stream import compressm as cm
from essm_stream.errors import ConfigError

OMEGA = np.linspace(-np.pi, np.pi, 2001)


def _peak(E: np.ndarray) -> float:
    """max over the first axis of the spectral norm of each matrix."""
    return float(np.linalg.svd(E, compute_uv=False)[:, 0].max())


def _system(seed, N, m=3, p=2, rmax=0.97):
    rng = np.random.default_rng(seed)
    lam = rng.uniform(0.2, rmax, N) * np.exp(1j * rng.uniform(-np.pi, np.pi, N))
    Bt = rng.normal(size=(N, m)) + 1j * rng.normal(size=(N, m))
    C = rng.normal(size=(p, N)) + 1j * rng.normal(size=(p, N))
    return lam, Bt, C


@pytest.mark.parametrize("seed,N", [(0, 1), (1, 3), (2, 6), (3, 10)])
def test_gramians_match_scipy_lyapunov(seed, N):
    lam, Bt, C = _system(seed, N, rmax=0.995)
    P, Q = cm.gramians(lam, Bt, C)
    A = np.diag(lam)
    P_ref = sl.solve_discrete_lyapunov(A, Bt @ Bt.conj().T)           # A P A^H − P + B B^H = 0
    Q_ref = sl.solve_discrete_lyapunov(A.conj().T, C.conj().T @ C)    # A^H Q A − Q + C^H C = 0
    eP = np.abs(P - P_ref).max() / np.abs(P_ref).max()
    eQ = np.abs(Q - Q_ref).max() / np.abs(Q_ref).max()
    print(f"N={N}: rel err P {eP:.1e}, Q {eQ:.1e}")
    assert eP < 1e-10 and eQ < 1e-10
    g = cm.hankel_singular_values(lam, Bt, C)
    g_ref = np.sort(np.sqrt(np.abs(np.linalg.eigvals(P_ref @ Q_ref))))[::-1]
    assert np.all(np.diff(g) <= 0)
    assert np.abs(g - g_ref).max() <= 1e-8 * g_ref[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_truncation_within_hsv_bound(seed):
    lam, Bt, C = _system(seed, 8)
    G = cm.transfer(lam, Bt, C, OMEGA)
    h = cm.impulse_response(lam, Bt, C, 300, real=True)
    g = cm.hankel_singular_values(lam, Bt, C)
    for r in range(1, 8):
        lr, Br, Cr, _ = cm.reduce_system(lam, Bt, C, r)
        assert len(lr) == r and np.all(np.abs(lr) < 1) and np.all(np.angle(lr) >= 0)
        bound = 2 * g[r:].sum()
        # H∞ on the frequency grid, of the complex system G
        Gr = cm.transfer(lr, Br, Cr, OMEGA)
        hinf = _peak(G - Gr)
        # the layer outputs Re(C x) of a real input: its transfer is (G(ω) + conj G(−ω)) / 2; the
        # conjugate flips in re-diagonalisation change G_r but not this real transfer
        H = 0.5 * (G + np.conj(G[::-1]))
        Hr = 0.5 * (Gr + np.conj(Gr[::-1]))
        hinf_real = _peak(H - Hr)
        # every impulse-response matrix is bounded by the H∞ norm of the error
        hr = cm.impulse_response(lr, Br, Cr, 300, real=True)
        h_err = _peak(h - hr)
        print(f"r={r}: ‖H−H_r‖∞ {hinf_real:.3g}, max ‖h−h_r‖ {h_err:.3g}, bound {bound:.3g}")
        assert hinf_real <= bound * (1 + 1e-9)
        assert h_err <= bound * (1 + 1e-9)
        assert h_err > 0 and hinf_real > 0.05 * g[r]   # the bound is not met trivially


def test_balanced_truncation_of_dense_system_is_balanced_and_bounded():
    """The full-rank transform balances: P = Q = diag(g). (In discrete time a truncation of a
    balanced system is stable and obeys the bound but is not itself balanced.)"""
    lam, Bt, C = _system(7, 6)
    g = cm.hankel_singular_values(lam, Bt, C)
    Ab, Bb, Cb, _ = cm.balanced_truncation(lam, Bt, C, 6)
    Pb = sl.solve_discrete_lyapunov(Ab, Bb @ Bb.conj().T)
    Qb = sl.solve_discrete_lyapunov(Ab.conj().T, Cb.conj().T @ Cb)
    assert np.abs(Pb - np.diag(g)).max() <= 1e-8 * g[0]
    assert np.abs(Qb - np.diag(g)).max() <= 1e-8 * g[0]
    for r in (2, 4):
        Ar, Br, Cr, _ = cm.balanced_truncation(lam, Bt, C, r)
        assert np.abs(np.linalg.eigvals(Ar)).max() < 1
        # the complex system's H∞ error obeys the bound too (before any conjugate flips)
        z = np.exp(1j * OMEGA)
        Gd = np.stack([Cr @ np.linalg.solve(np.eye(r) - Ar / zz, Br) for zz in z])
        E = cm.transfer(lam, Bt, C, OMEGA) - Gd
        assert _peak(E) <= 2 * g[r:].sum() * (1 + 1e-9)


def test_full_rank_reduction_is_exact():
    lam, Bt, C = _system(4, 5)
    lr, Br, Cr, _ = cm.reduce_system(lam, Bt, C, 5)
    h = cm.impulse_response(lam, Bt, C, 100)
    assert np.abs(h - cm.impulse_response(lr, Br, Cr, 100)).max() <= 1e-9 * np.abs(h).max()


def test_rank_rules():
    g = np.array([5.0, 3.0, 1.0, 0.5, 0.5])
    assert cm.rank_for_energy(g, 0.5) == 1          # 5/10 reaches 0.5
    assert cm.rank_for_energy(g, 0.8) == 2
    assert cm.rank_for_energy(g, 0.9) == 3
    assert cm.rank_for_energy(g, 1.0) == 5
    assert cm.CompressRule(rank=3).target_rank(g) == 3 and cm.CompressRule(rank=9).target_rank(g) == 5
    r = cm.CompressRule.parse("energy=0.99", "0.4,0.2")
    assert r.energy == 0.99 and r.at == (0.2, 0.4) and r.steps(100) == [20, 40]
    for spec, at in (("energy=1.5", None), ("rank=0", None), ("rank=x", None), ("size=3", None),
                     ("rank=3", "0.2,1.2"), ("rank", None)):
        with pytest.raises(ConfigError):
            cm.CompressRule.parse(spec, at)
    with pytest.raises(ConfigError):
        cm.CompressRule(energy=0.9, rank=3)
    with pytest.raises(ConfigError):
        cm.balanced_truncation(*_system(0, 3), 4)
    with pytest.raises(ConfigError):
        cm.gramians(np.array([1.0 + 0j]), np.ones((1, 1)), np.ones((1, 1)))


def test_reduce_model_truncates_layers_and_optimizer():
    torch = pytest.importorskip("torch")
    from essm_stream.lru import LRUModel
    from essm_stream.lru_config import LRUConfig
    torch.manual_seed(0)
    m = LRUModel(LRUConfig(d_in=2, d_out=3, d_model=6, n_layers=2, state=10)).double()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randn(2, 20, 2, dtype=torch.float64)
    m(x).sum().backward()
    opt.step()
    layer0 = m.blocks[0].lru
    lam, Bt, C = layer0.system()
    g = cm.hankel_singular_values(lam, Bt, C)
    h0 = cm.impulse_response(lam, Bt, C, 200)
    ev = cm.reduce_model(m, cm.CompressRule(rank=4), opt)
    assert ev["ranks"] == [4, 4] and m.cfg.layer_states() == (4, 4) and all(ev["reduced"])
    # the layer now realises the reduced system, within the HSV bound of the original
    h1 = cm.impulse_response(*layer0.system(), 200)
    assert _peak(h0 - h1) <= 2 * g[4:].sum() * (1 + 1e-9)
    # the optimizer holds the new parameters (no stale state) and keeps stepping
    params = {id(p) for grp in opt.param_groups for p in grp["params"]}
    assert params == {id(p) for p in m.parameters()}
    assert all(id(p) in params for p in opt.state)
    opt.zero_grad()
    m(x).sum().backward()
    opt.step()
    assert opt.state[layer0.nu]["exp_avg"].shape == (4,)
    # a second pass at the same rank is a no-op (only reduce below 0.95 of the current size)
    assert not any(cm.reduce_model(m, cm.CompressRule(rank=4), opt)["reduced"])


def test_modal_control_keeps_heaviest_modes():
    torch = pytest.importorskip("torch")
    from essm_stream.lru import LRUModel
    from essm_stream.lru_config import LRUConfig
    torch.manual_seed(1)
    m = LRUModel(LRUConfig(d_in=2, d_out=3, d_model=6, n_layers=1, state=10)).double()
    lam, Bt, C = m.blocks[0].lru.system()
    keep = np.sort(np.argsort(-cm.modal_scores(lam, Bt, C))[:3])
    with torch.no_grad():   # a phase exp θ past π wraps to arg λ < 0: kept as its conjugate
        m.blocks[0].lru.theta[keep[0]] = np.log(1.5 * np.pi)
    lam, Bt, C = m.blocks[0].lru.system()
    h = cm.impulse_response(lam[keep], Bt[keep], C[:, keep], 50)
    cm.reduce_model(m, cm.CompressRule(rank=3, method="modal"))
    lam2, Bt2, C2 = m.blocks[0].lru.system()
    assert np.allclose(np.abs(lam2), np.abs(lam[keep]), atol=1e-12) and np.all(np.angle(lam2) >= 0)
    assert np.abs(cm.impulse_response(lam2, Bt2, C2, 50) - h).max() <= 1e-10   # same real system
    with pytest.raises(ConfigError):
        cm.CompressRule(rank=3, method="random")
