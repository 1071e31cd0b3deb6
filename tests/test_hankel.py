"""Spectral filters: the closed form of Z, exactness of the eigenpairs, caching, validation.

Accuracy is checked against references that do not share code with essm_stream.hankel:
mpmath's own dense eigensolver (L=40), mpmath matrix-vector products at the exact rational Z, and
one step of inverse iteration in 400-bit Arb (L=128).  The strongest claims are bitwise: each
returned phi_k / sigma_k is the exact eigenvector / eigenvalue correctly rounded to float64.

The float64 relative residual ||Z phi_k - sigma_k phi_k|| / sigma_k cannot be small for the tiny
sigma_k: rounding phi_k to float64 alone leaves ~1e-17 of phi_1 in it, i.e. ~1e-17 sigma_1 /
sigma_k (1e+8 at L=128, k=32).  So the residual is asserted where it is meaningful: relative
<= 1e-30 for the unrounded high-precision eigenvectors, and as a backward error (<= 4 eps sigma_1)
plus forward (bitwise) accuracy for the float64 outputs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from essm_stream import hankel
from essm_stream.errors import ConfigError
from essm_stream.hankel import hankel_matrix, spectral_filters

mpmath = pytest.importorskip("mpmath")
pytest.importorskip("flint")  # python-flint: needed to compute filters ([train] extra)

EPS = 2.0**-53  # unit roundoff of float64


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("essm-filter-cache")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, session_cache):
    """Never touch the user's ~/.cache; share one cache directory across this module's tests."""
    monkeypatch.setenv("ESSM_CACHE_DIR", str(session_cache))


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    """An empty cache directory and an empty in-memory cache (restored empty afterwards)."""
    d = tmp_path / "filters"
    monkeypatch.setenv("ESSM_CACHE_DIR", str(d))
    hankel.clear_cache()
    yield d
    hankel.clear_cache()


def _count_computes(monkeypatch):
    calls = []
    real = hankel._compute

    def counting(L, K, **kw):
        calls.append((L, K))
        return real(L, K, **kw)

    monkeypatch.setattr(hankel, "_compute", counting)
    return calls


def _exact_Z_mp(L):
    """h[s-2] = 2/(s^3-s), s = 2..2L, as mpf at the current mpmath precision (Z[i, j] = h[i+j])."""
    return [mpmath.mpf(2) / (s**3 - s) for s in range(2, 2 * L + 1)]


# ----------------------------------------------------------------------------------------------
# the matrix


def test_closed_form_equals_integral_of_mu_mu_T():
    L = 5
    with mpmath.workdps(40):
        for i in range(1, L + 1):
            for j in range(1, L + 1):
                n = i + j - 2
                integral = mpmath.quad(lambda b, n=n: (b - 1) ** 2 * b**n, [0, 1])
                s = i + j
                exact = Fraction(2, s**3 - s)
                exact_mp = mpmath.mpf(exact.numerator) / exact.denominator
                assert abs(integral - exact_mp) < mpmath.mpf(10) ** -35
                assert hankel_matrix(L)[i - 1, j - 1] == pytest.approx(float(integral), rel=1e-15)


def test_hankel_matrix_entries_are_correctly_rounded():
    L = 300
    Z = hankel_matrix(L)
    assert Z.shape == (L, L) and Z.dtype == np.float64
    expected = [float(Fraction(2, s**3 - s)) for s in range(2, 2 * L + 1)]  # correctly rounded
    for i in range(L):
        assert Z[i].tolist() == expected[i:i + L]
    np.testing.assert_array_equal(Z, Z.T)


# ----------------------------------------------------------------------------------------------
# structural properties


@pytest.mark.parametrize("L,K", [(1, 1), (2, 2), (32, 32), (64, 16), (128, 32), (1024, 32)])
def test_shapes_order_positivity_orthonormality_sign(L, K):
    sigma, phi = spectral_filters(L, K)
    assert sigma.shape == (K,) and phi.shape == (L, K)
    assert sigma.dtype == np.float64 and phi.dtype == np.float64
    assert np.all(np.isfinite(sigma)) and np.all(np.isfinite(phi))
    assert np.all(sigma > 0)
    assert np.all(np.diff(sigma) < 0), "sigma must be strictly decreasing"
    assert sigma[0] <= np.trace(hankel_matrix(L)) + 1e-15
    assert np.max(np.abs(phi.T @ phi - np.eye(K))) <= 1e-12
    np.testing.assert_allclose(np.linalg.norm(phi, axis=0), 1.0, atol=1e-15)
    big = np.argmax(np.abs(phi), axis=0)
    assert np.all(phi[big, np.arange(K)] > 0), "entry of largest magnitude must be positive"


def test_top_pairs_agree_with_float64_eigh():
    """Where float64 is accurate (well-separated, sigma_k >~ 1e-6 sigma_1) both must agree."""
    L = 128
    sigma, phi = spectral_filters(L, 32)
    w, U = np.linalg.eigh(hankel_matrix(L))
    w, U = w[::-1], U[:, ::-1]
    for k in range(5):
        assert abs(w[k] - sigma[k]) <= 1e-14 * sigma[0]
        u = U[:, k] * np.sign(U[:, k] @ phi[:, k])
        assert np.linalg.norm(u - phi[:, k]) <= 1e-12


# ----------------------------------------------------------------------------------------------
# accuracy against independent high-precision references


def test_bitwise_equal_to_rounded_mpmath_eigsy_reference():
    """L=40, K=32 (sigma_32/sigma_1 ~ 4e-41): mpmath's dense eigensolver at 66 digits is the
    reference; every sigma_k and every entry of phi_k must be the reference correctly rounded."""
    L, K = 40, 32
    sigma, phi = spectral_filters(L, K)
    with mpmath.workdps(66):
        h = _exact_Z_mp(L)
        Z = mpmath.matrix([[h[i + j] for j in range(L)] for i in range(L)])
        E, Q = mpmath.eigsy(Z)
        order = sorted(range(L), key=lambda k: E[k], reverse=True)[:K]
        for col, k in enumerate(order):
            assert sigma[col] == float(E[k]), f"sigma_{col + 1} is not the rounded eigenvalue"
            v = [Q[i, k] for i in range(L)]
            big = max(range(L), key=lambda i: abs(v[i]))
            ref = np.array([float(x if v[big] > 0 else -x) for x in v])
            mism = int(np.sum(ref != phi[:, col]))
            assert mism == 0, f"phi_{col + 1}: {mism} entries differ from the rounded eigenvector"
            # forward error of a correctly rounded unit vector is <= eps in 2-norm
            fwd = mpmath.sqrt(mpmath.fsum((mpmath.mpf(float(a)) - (b if v[big] > 0 else -b)) ** 2
                                          for a, b in zip(phi[:, col], v)))
            assert fwd <= EPS


def test_high_precision_relative_residual_at_exact_Z():
    """The unrounded eigenvectors behind the outputs (L=64, K=32, sigma_32/sigma_1 ~ 4e-34):
    relative residual ||Z v_k - theta_k v_k|| / theta_k <= 1e-30 for every k, computed with mpmath
    (80 digits) at the exact rational Z; phi_k and sigma_k are v_k and theta_k correctly rounded."""
    L, K = 64, 32
    sigma, phi, V = hankel._compute(L, K, exact=True)
    with mpmath.workdps(80):
        h = _exact_Z_mp(L)
        for k in range(K):
            n = mpmath.sqrt(mpmath.fsum(mpmath.mpf(x) ** 2 for x in V[k]))
            v = [mpmath.mpf(x) / n for x in V[k]]
            Zv = [mpmath.fdot(h[i:i + L], v) for i in range(L)]
            theta = mpmath.fdot(v, Zv)
            res = mpmath.sqrt(mpmath.fsum((a - theta * b) ** 2 for a, b in zip(Zv, v)))
            rel = res / theta
            assert rel <= 1e-30, f"k={k + 1}: relative residual {mpmath.nstr(rel, 3)}"
            assert sigma[k] == float(theta)
            sgn = 1 if mpmath.fdot(v, [mpmath.mpf(float(x)) for x in phi[:, k]]) > 0 else -1
            np.testing.assert_array_equal(phi[:, k], [float(sgn * x) for x in v])
    s2, p2 = spectral_filters(L, K)
    np.testing.assert_array_equal(s2, sigma)
    np.testing.assert_array_equal(p2, phi)


def test_float64_outputs_residual_and_rayleigh_quotient_at_exact_Z():
    """L=128, K=32 (sigma_32/sigma_1 ~ 4e-28), mpmath at the exact Z: backward error
    ||Z phi_k - sigma_k phi_k|| <= 4 eps sigma_1, and the Rayleigh quotient of the float64 phi_k
    matches sigma_k to 1e-5 relative (noise vectors from float64 eigh miss by O(1))."""
    L, K = 128, 32
    sigma, phi = spectral_filters(L, K)
    with mpmath.workdps(50):
        h = _exact_Z_mp(L)
        s1 = mpmath.mpf(float(sigma[0]))
        for k in range(K):
            p = [mpmath.mpf(float(x)) for x in phi[:, k]]
            Zp = [mpmath.fdot(h[i:i + L], p) for i in range(L)]
            sk = mpmath.mpf(float(sigma[k]))
            res = mpmath.sqrt(mpmath.fsum((a - sk * b) ** 2 for a, b in zip(Zp, p)))
            assert res <= 4 * EPS * s1, f"k={k + 1}: backward error {mpmath.nstr(res / s1, 3)}"
            rq = mpmath.fdot(p, Zp) / mpmath.fdot(p, p)
            assert abs(rq - sk) / sk <= 1e-5, f"k={k + 1}: Rayleigh quotient off"


def test_one_step_of_inverse_iteration_reproduces_phi_bitwise():
    """L=128: x = (Z - sigma_k I)^-1 phi_k in 400-bit Arb at the exact rational Z, normalised and
    rounded, equals phi_k in every bit (inverse iteration squares the forward error).  Checked for
    k = 1 and for k >= 20, where float64 eigensolvers return noise."""
    flint = pytest.importorskip("flint")
    L, K = 128, 32
    sigma, phi = spectral_filters(L, K)
    with flint.ctx.workprec(400):
        h = [flint.arb(flint.fmpq(2, s**3 - s)) for s in range(2, 2 * L + 1)]
        for k in [0] + list(range(19, K, 2)) + [K - 1]:
            shift = flint.arb(float(sigma[k]))
            A = flint.arb_mat([[h[i + j] - shift if i == j else h[i + j] for j in range(L)]
                               for i in range(L)])
            x = A.solve(flint.arb_mat(L, 1, [float(v) for v in phi[:, k]]), algorithm="approx")
            xs = [x[i, 0].mid() for i in range(L)]
            n = sum((t * t for t in xs), flint.arb(0)).sqrt()
            xr = np.array([float((t / n).mid()) for t in xs])
            xr *= np.sign(xr[np.argmax(np.abs(xr))])
            assert int(np.sum(xr != phi[:, k])) == 0, f"phi_{k + 1} is not the rounded eigenvector"


# ----------------------------------------------------------------------------------------------
# determinism


def test_deterministic_and_independent_of_the_iteration_start(fresh_cache):
    """L=48, K=32 reaches ~7e-38 sigma_1, far below the float64 noise floor (k >= ~14)."""
    L, K = 48, 32
    s1, p1 = spectral_filters(L, K)
    s2, p2 = spectral_filters(L, K)
    assert s1.tobytes() == s2.tobytes() and p1.tobytes() == p2.tobytes()
    s2, p2 = hankel._compute(L, K)  # recomputed from scratch
    assert s1.tobytes() == s2.tobytes() and p1.tobytes() == p2.tobytes()
    # another block size takes another arithmetic path to the same correctly rounded result
    s3, p3 = hankel._compute(L, K, extra=5)
    assert s3.tobytes() == s1.tobytes() and p3.tobytes() == p1.tobytes()
    # the leading columns do not depend on K
    s4, p4 = hankel._compute(L, 12)
    assert s4.tobytes() == s1[:12].tobytes()
    assert p4.tobytes() == np.ascontiguousarray(p1[:, :12]).tobytes()


def test_returns_fresh_writable_copies():
    sigma, phi = spectral_filters(32, 4)
    sigma[0] = -1.0
    phi[:] = 0.0
    s2, p2 = spectral_filters(32, 4)
    assert s2[0] > 0 and np.any(p2 != 0)


# ----------------------------------------------------------------------------------------------
# caching


def test_disk_cache_round_trip_and_slicing(fresh_cache, monkeypatch):
    calls = _count_computes(monkeypatch)
    sigma, phi = spectral_filters(40, 20)
    assert calls == [(40, 20)]
    files = sorted(p.name for p in fresh_cache.iterdir())
    assert files == ["hankel_v1_L40_K20.npz"], files  # written atomically: no temp file left
    with np.load(fresh_cache / files[0], allow_pickle=False) as z:
        np.testing.assert_array_equal(z["sigma"], sigma)
        np.testing.assert_array_equal(z["phi"], phi)
        assert int(z["L"]) == 40 and int(z["K"]) == 20

    hankel.clear_cache()
    s2, p2 = spectral_filters(40, 20)  # from disk
    s3, p3 = spectral_filters(40, 7)   # sliced from the K=20 file
    assert calls == [(40, 20)], "cache hits must not recompute"
    np.testing.assert_array_equal(s2, sigma)
    np.testing.assert_array_equal(p2, phi)
    np.testing.assert_array_equal(s3, sigma[:7])
    np.testing.assert_array_equal(p3, phi[:, :7])

    spectral_filters(40, 21)  # larger K than cached: computed
    assert calls == [(40, 20), (40, 21)]
    spectral_filters(41, 5)  # other L: computed
    assert calls[-1] == (41, 5)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("ESSM_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hankel.cache_dir() == tmp_path / ".cache" / "essm-stream" / "filters"


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _bad_npz_wrong_shape(path, good):
    np.savez(path, version=np.int64(1), L=np.int64(20), K=np.int64(5),
             sigma=good[0][:-1], phi=good[1][:, :-1])


def _bad_npz_unsorted(path, good):
    np.savez(path, version=np.int64(1), L=np.int64(20), K=np.int64(5),
             sigma=good[0][::-1].copy(), phi=good[1])


def _bad_npz_wrong_sign(path, good):
    np.savez(path, version=np.int64(1), L=np.int64(20), K=np.int64(5),
             sigma=good[0], phi=-good[1])


def _bad_npz_pickled(path, good):
    np.savez(path, version=np.int64(1), L=np.int64(20), K=np.int64(5),
             sigma=np.array([object()] * 5, dtype=object), phi=good[1])


@pytest.mark.parametrize("corrupt", [
    lambda p, g: p.write_bytes(b"not a zip file at all"),
    lambda p, g: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    lambda p, g: p.write_bytes(b""),
    lambda p, g: _flip_middle_byte(p),
    _bad_npz_wrong_shape,
    _bad_npz_unsorted,
    _bad_npz_wrong_sign,
    _bad_npz_pickled,
], ids=["garbage", "truncated", "empty", "bitflip", "shape", "unsorted", "sign", "pickle"])
def test_corrupted_cache_file_is_ignored_and_recomputed(fresh_cache, monkeypatch, corrupt):
    good = spectral_filters(20, 5)
    path = fresh_cache / "hankel_v1_L20_K5.npz"
    assert path.exists()
    corrupt(path, good)
    hankel.clear_cache()
    calls = _count_computes(monkeypatch)
    sigma, phi = spectral_filters(20, 5)
    assert calls == [(20, 5)]
    np.testing.assert_array_equal(sigma, good[0])
    np.testing.assert_array_equal(phi, good[1])
    with np.load(path, allow_pickle=False) as z:  # rewritten, valid again
        np.testing.assert_array_equal(z["phi"], good[1])


def test_unwritable_cache_dir_still_returns_filters(monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("ESSM_CACHE_DIR", str(blocker / "filters"))  # parent is a file
    hankel.clear_cache()
    sigma, phi = spectral_filters(24, 3)
    assert sigma.shape == (3,) and phi.shape == (24, 3)
    assert any("could not write" in r.getMessage() for r in caplog.records)
    hankel.clear_cache()


# ----------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("L,K,needle", [
    (0, 1, "L=0"), (-3, 1, "L=-3"), (16, 0, "K=0"), (16, 17, "K=17"), (16.0, 4, "16.0"),
    (16, 4.0, "4.0"), ("16", 4, "'16'"), (16, None, "None"), (True, 1, "True"),
    (16, np.float64(2), "2.0"),
])
def test_bad_inputs_raise_config_error(L, K, needle):
    with pytest.raises(ConfigError) as exc:
        spectral_filters(L, K)
    assert needle in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_numpy_integers_are_accepted():
    s1, p1 = spectral_filters(np.int64(32), np.int32(4))
    s2, p2 = spectral_filters(32, 4)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(p1, p2)


def test_hankel_matrix_validates_L():
    with pytest.raises(ConfigError, match="L=0"):
        hankel_matrix(0)
    with pytest.raises(ConfigError, match="2.5"):
        hankel_matrix(2.5)


def test_import_pulls_in_no_heavy_dependency():
    code = ("import sys, essm_stream.hankel; "
            "bad = [m for m in ('torch', 'flint', 'mpmath') if m in sys.modules]; "
            "assert not bad, bad")
    env = dict(os.environ)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
