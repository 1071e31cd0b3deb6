"""The ladder fit (essm_stream/lds.py) and its kernels (essm_stream/kernels_lds.py).

Held to: the exact sliding-window FIR of the σ^{1/4}-scaled Hankel filters (plain numpy, float64).
Tolerances: the float64 ladder equals the FIR of its own fitted filters h̃ to 1e-11 relative over
100·L steps (the window correction is exact: the streamed error IS the fit error, it cannot grow);
against the true filters every output obeys |Δ| <= ||h̃_k - h_k||_2 ||u window||_2 (Cauchy–Schwarz);
float32 kernels stay within 2e-5 of the float64 reference over 100·L steps, first and last
tenth alike (measured ~1e-6: the all-pass chain does not amplify rounding).
"""
import numpy as np
import pytest
from scipy.signal import lfilter

from essm_stream import kernels_lds as kl
from essm_stream import lds
from essm_stream.errors import ConfigError
from essm_stream.hankel import spectral_filters

L0 = 128


@pytest.fixture(scope="module")
def bank():
    sigma, phi = spectral_filters(L0, 32)
    return lds.scaled_filters(phi, sigma)


@pytest.fixture(scope="module")
def factors(bank):
    return lds.hankel_svd(bank)


@pytest.fixture(scope="module")
def fit(bank, factors):
    return lds.fit_ladder(bank, 1e-3, factors=factors)


def fitted_filters(f):
    """h̃ (L, K): the ladder's impulse responses truncated to the window."""
    return lds.ladder_basis(f.poles, f.L) @ f.C.T


def windowed_norms(U, L):
    """(T, d): ||u_j(t-L+1 .. t)||_2 for every t."""
    c = np.cumsum(np.vstack([np.zeros((1, U.shape[1])), U ** 2]), axis=0)
    t = np.arange(U.shape[0])
    return np.sqrt(c[t + 1] - c[np.maximum(t + 1 - L, 0)])


def test_fft_hankel_products_equal_the_dense_matrix():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((40, 3))
    H = lds._Hankel(h, 20)
    idx = np.arange(H.r)[:, None] + np.arange(20)[None, :]
    H0 = np.vstack([h[idx, k] for k in range(3)])
    H1 = np.vstack([h[idx + 1, k] for k in range(3)])
    X, Y = rng.standard_normal((20, 4)), rng.standard_normal((3 * H.r, 4))
    assert np.allclose(H.matvec(X), H0 @ X, atol=1e-12)
    assert np.allclose(H.rmatvec(Y), H0.T @ Y, atol=1e-12)
    assert np.allclose(H.rmatvec(Y, s=1), H1.T @ Y, atol=1e-12)


def test_randomized_hsv_equal_the_dense_svd(bank, factors):
    c = L0 // 2
    r = L0 - c
    idx = np.arange(r)[:, None] + np.arange(c)[None, :]
    s = np.linalg.svd(np.vstack([bank[idx, k] for k in range(bank.shape[1])]), compute_uv=False)
    n = 24                                                 # down to ~1e-12 relative
    rel = np.abs(factors.s[:n] - s[:n]) / s[0]
    print(f"HSV randomized vs dense: max diff {rel.max():.1e} (relative to the first)")
    assert rel.max() < 1e-12


def test_fit_reaches_tol_with_few_poles_and_records_per_filter_error(bank, fit):
    assert fit.buffered and fit.source == "era"
    assert np.all((fit.poles > 0) & (fit.poles < 1))
    assert np.array_equal(fit.poles, fit.poles.astype(np.float32).astype(np.float64))
    assert fit.N <= 24, fit.N                              # probe: ~18 at L=128
    assert np.abs(fit.C).max() < 1.0                       # orthonormal basis: readout O(1)
    # the recorded per-filter error is the measured one
    e = np.linalg.norm(fitted_filters(fit) - bank, axis=0) / np.linalg.norm(bank, axis=0).max()
    print("per-filter error:", np.array2string(fit.err, precision=1))
    assert np.allclose(fit.err, e, rtol=1e-8, atol=1e-15)
    assert fit.err.max() <= 1e-3 and fit.weighted_err == pytest.approx(fit.err.max())


def test_error_falls_with_N_and_HSVs_bound_it(bank, factors):
    cur = lds.error_curve(bank, [6, 10, 14, 18, 22, 30], factors=factors)
    errs = [r["error"] for r in cur["rows"]]
    print("error vs N:", ", ".join(f"{r['N']}:{r['error']:.1e}({r['source']})" for r in cur["rows"]))
    assert all(b < a for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 1e-5
    hsv = np.array(cur["hsv"])
    assert hsv[0] == 1 and np.all(np.diff(hsv[:30]) <= 0)
    # tighter tol -> more poles
    ns = [lds.fit_ladder(bank, t, factors=factors).N for t in (1e-2, 1e-3, 1e-4)]
    assert ns[0] < ns[1] < ns[2], ns


def test_basis_orthonormal_and_window_vector_is_A_to_the_L_b(fit):
    G = lds.ladder_basis(fit.poles, 200 * fit.L)
    assert np.abs(G.T @ G - np.eye(fit.N)).max() < 1e-9
    # explicit (A, b) of the chain: impulse responses of the raw states, columns of A from unit states
    N = fit.N
    A = np.zeros((N, N))
    for m in range(N):
        v = np.eye(N)[:, m:m + 1].copy()                      # (N, 1): one channel
        lds.ladder_step_ref(v, np.zeros(1), np.zeros(1), fit.poles, np.zeros(N))
        A[:, m] = v[:, 0]
    v = np.zeros((N, 1))
    lds.ladder_step_ref(v, np.ones(1), np.zeros(1), fit.poles, np.zeros(N))
    b = v[:, 0]
    assert np.allclose(np.linalg.matrix_power(A, fit.L) @ b, fit.bL, atol=1e-13)


def test_reference_stepper_is_exact_fir_of_its_fit_for_100L_steps(bank, fit):
    rng = np.random.default_rng(1)
    T, d = 100 * fit.L, 2
    U = rng.standard_normal((T, d))
    y = lds.ladder_filter_ref(U, fit)                                     # (T, K, d)
    ht = fitted_filters(fit)
    exact_fit = np.stack([lfilter(ht[:, k], [1.0], U, axis=0) for k in range(ht.shape[1])], axis=1)
    exact = np.stack([lfilter(bank[:, k], [1.0], U, axis=0) for k in range(bank.shape[1])], axis=1)
    scale = np.abs(exact).max()
    drift = np.abs(y - exact_fit).max() / scale
    print(f"ladder vs FIR of its own fit over {T} steps: {drift:.1e}")
    assert drift < 1e-11                                   # window correction exact, no drift
    # the spot-check reference (direct sums) agrees with lfilter on a prefix past L
    assert np.allclose(lds.fir_filter_ref(U[:2 * fit.L], bank), exact[:2 * fit.L], atol=1e-12)
    # every output within the Cauchy–Schwarz bound of the fit error
    dh = np.linalg.norm(ht - bank, axis=0)                                # (K,)
    bound = dh[None, :, None] * windowed_norms(U, fit.L)[:, None, :]
    assert np.all(np.abs(y - exact) <= bound * (1 + 1e-9) + 1e-12)
    rel = np.abs(y - exact).max() / scale
    print(f"ladder vs exact filters: {rel:.1e} relative (fit error {fit.weighted_err:.1e})")
    assert rel < 2e-3


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_kernels_equal_reference_every_K_no_growth(fit, dtype, tol):
    rng = np.random.default_rng(2)
    T, d, Kb = 100 * fit.L, 3, fit.C.shape[0]
    U = rng.standard_normal((T, d))
    Uold = np.zeros_like(U)
    Uold[fit.L:] = U[:-fit.L]
    ref = lds.ladder_filter_ref(U, fit)                                   # float64, loops
    Wt = kl.ladder_weights(fit.poles, fit.bL, fit.readout_v, dtype)
    for K in (1, 5, Kb):
        V, S, out = np.zeros(fit.N * d, dtype), np.zeros(d, dtype), np.zeros((T, K * d), dtype)
        kl.ladder_run(U.astype(dtype), Uold.astype(dtype), Wt, fit.N, K, V, S, out)
        err = np.abs(out.reshape(T, K, d) - ref[:, :K]) / np.abs(ref[:, 0]).max()
        tenth = err.reshape(10, -1).max(axis=1)
        print(f"{np.dtype(dtype).name} K={K}: max {err.max():.1e}, first/last tenth {tenth[0]:.1e}/{tenth[-1]:.1e}")
        assert err.max() < tol
        if dtype == np.float32:
            assert tenth[-1] < 4 * tenth[0] + 1e-7               # no growth over 100 L steps


def test_kernel_and_ref_share_a_signature(fit):
    rng = np.random.default_rng(3)
    d, N, Kb = 5, fit.N, fit.C.shape[0]
    Wt = kl.ladder_weights(fit.poles, fit.bL, fit.readout_v, np.float64)
    V1 = rng.standard_normal(N * d)
    V2 = V1.copy()
    x, xo = rng.standard_normal(d), rng.standard_normal(d)
    kl.ladder_update(V1, 0, x, 0, xo, 0, Wt, 0, N, np.zeros(d), 0, N, d)
    kl.ladder_update_ref(V2, 0, x, 0, xo, 0, Wt, 0, N, np.zeros(d), 0, N, d)
    assert np.allclose(V1, V2, rtol=0, atol=1e-13)
    o1, o2 = np.zeros(7 * d), np.zeros(7 * d)
    kl.ladder_readout(V1, 0, Wt, 2 * N, N, o1, 0, 7, N, d)
    kl.ladder_readout_ref(V1, 0, Wt, 2 * N, N, o2, 0, 7, N, d)
    assert np.allclose(o1, o2, rtol=0, atol=1e-13) and Kb >= 7


def test_no_buffer_variant_is_labelled_and_within_its_error(bank, factors):
    f = lds.fit_ladder(bank, 1e-2, buffered=False, factors=factors)
    assert not f.buffered and not np.any(f.bL)
    assert f.weighted_err <= 1e-2
    rng = np.random.default_rng(4)
    T, d = 30 * f.L, 2
    U = rng.standard_normal((T, d))
    y = lds.ladder_filter_ref(U, f)
    exact = np.stack([lfilter(bank[:, k], [1.0], U, axis=0) for k in range(bank.shape[1])], axis=1)
    # its response runs on past L: the bound uses the error over [0, ∞) and all the past input
    rel = np.abs(y - exact).max() / np.abs(exact).max()
    print(f"no-buffer ladder N={f.N} vs exact: {rel:.1e} (fit error over [0, inf) {f.weighted_err:.1e})")
    assert rel < 3e-2


def test_fallback_poles_when_era_poles_are_not_real():
    tau = np.arange(64.0)
    h = (0.9 ** tau * np.cos(0.7 * tau))[:, None]          # a resonance: ERA finds complex poles
    f = lds.hankel_svd(h)
    assert lds._real_unit_poles(lds.era_poles(f, 2)) is None
    fit = lds.fit_ladder(h, 0.3, factors=f)
    assert fit.source == "geometric" and fit.weighted_err <= 0.3
    g = lds.geometric_poles(1024, 20)
    assert np.all((g > 0) & (g < 1)) and g.max() == pytest.approx(1 - 8 / 1024, rel=1e-6)


def test_weights_steer_the_tolerance(bank, factors):
    w = np.ones(bank.shape[1])
    w[1:] = 1e-6                                           # only the first filter matters
    fw = lds.fit_ladder(bank, 1e-3, weights=w)
    assert fw.weighted_err <= 1e-3
    assert fw.N <= lds.fit_ladder(bank, 1e-3, factors=factors).N


@pytest.mark.parametrize("kw,msg", [({"tol": 0}, "tol"), ({"tol": 1.5}, "tol"), ({"tol": True}, "tol"),
                                    ({"n_max": 0}, "n_max"), ({"weights": np.ones(3)}, "weights"),
                                    ({"n_max": 3}, "no ladder")])
def test_bad_arguments_raise_config_errors(bank, factors, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        lds.fit_ladder(bank, **{"factors": factors, **kw})


def test_bad_banks_raise():
    with pytest.raises(ConfigError, match="shape"):
        lds.fit_ladder(np.ones(10))
    with pytest.raises(ConfigError, match="finite"):
        lds.fit_ladder(np.full((16, 2), np.nan))
    with pytest.raises(ConfigError, match="sigma"):
        lds.scaled_filters(np.ones((8, 2)), np.array([1.0, -1.0]))
