"""Spectral filters: the top-K eigenpairs of the Hankel matrix Z, exact to float64 working accuracy.

    Z[i, j] = 2 / ((i+j)^3 - (i+j)),   1 <= i, j <= L   (1-based)
            = integral_0^1 mu(b) mu(b)^T db,   mu(b) = (b - 1) [1, b, ..., b^(L-1)]

`spectral_filters(L, K)` returns ``sigma`` (K,) descending, all > 0, and ``phi`` (L, K) with unit
columns, each sign-fixed so that its entry of largest magnitude is positive.

Why not ``numpy.linalg.eigh``
-----------------------------
sigma_k / sigma_1 falls to ~4e-28 at L=128 and ~9e-20 at L=1024 for k=32.  A float64 eigensolver
is backward stable, i.e. exact for Z + E with ||E|| ~ 1e-16 sigma_1, so every eigenvector whose
eigenvalue lies below ~1e-16 sigma_1 (k >= ~24 at L <= 256) is noise that differs between LAPACK
builds, and the small sigma_k come out with no correct digits or negative.

Method
------
Block subspace iteration with Rayleigh-Ritz, done in exact integer (fixed-point) arithmetic with
python-flint:

* ``Hint = round(2^P Z)`` (P-bit fixed point; ||Hint/2^P - Z||_2 <= L 2^-(P+1)).  Hint is Hankel,
  so ``Hint @ x`` is the middle third of one polynomial product h(t) * rev(x)(t), computed exactly
  by FLINT's ``fmpz_poly`` multiplication: O(L log L) per column instead of an L x L product.
* The block (m = K + a few columns, chosen from a model of the eigenvalue decay so that one step
  gains ~64 bits) starts from a cheap float64 randomized range finder (only a starting guess: the
  result does not depend on it).  Each step forms the exact Gram matrices Y^T Y and Y^T Hint Y
  (``fmpz_mat``), solves the small m x m eigenproblem at ~P+32 bits with Arb (``acb_mat.eig``,
  approximate QR), builds the Ritz vectors V exactly, and uses Hint V (rounded to P+16
  significant bits per column) as the next block.
* Stopping rule, a posteriori and exact: with theta_k the Rayleigh quotient of the Ritz vector
  v_k for H = Hint/2^P, ||H v_k - theta_k v_k||^2 = ||H v_k||^2 - theta_k^2 ||v_k||^2 is
  evaluated exactly in integers, and sin angle(v_k, eigenvector) <= ||r_k|| / gap_k
  (Davis-Kahan, gaps from the neighbouring Ritz values).  Iteration stops when
  that bound is <= 2^-112 for every k <= K and P is large enough that the rounding of Z itself
  moves no eigenvector by more than 2^-112 (P is raised automatically from the computed gaps).
* Outputs are rounded once: sigma_k is the exact Rayleigh quotient, correctly rounded; phi_k is
  v_k / ||v_k|| with each entry correctly rounded from an exact integer ratio.  Because the
  high-precision vectors are ~2^-112 from the exact eigenvectors, the float64 outputs are the
  correctly rounded exact eigenvectors (up to ties closer than 2^-112), hence bit-identical on
  every machine, whatever the BLAS used for the starting guess.

Achieved accuracy, K = 32, measured against the exact rational Z in high precision (Arb at 640
bits for every k; mpmath at 60 digits for k = 1, 8, 16, 24, 32 at L=128 and k = 1, 16, 32 at
L=1024 agrees); v_k is the exact unit eigenvector, lambda_k the exact eigenvalue::

                                                             L = 128     L = 1024
  forward error   max_k ||phi_k - v_k||_2                    5.7e-17     5.7e-17
  eigenvalues     max_k |sigma_k - lambda_k| / lambda_k      1.0e-16     9.9e-17
  orthonormality  ||Phi^T Phi - I||_max  (exact product)     1.0e-16     8.2e-17
                  the same product evaluated in float64      8.9e-16     1.7e-15
  backward error  max_k ||Z phi_k - sigma_k phi_k|| / sigma_1
                                                             7.5e-17     3.8e-17
  relative residual max_k ||Z x_k - sigma_k x_k|| / sigma_k
      x_k = the unrounded high-precision eigenvectors        1.3e-40     1.1e-41
      x_k = the returned float64 phi_k                       2.8e+08     2.6e+00

Every returned number is the exact value correctly rounded (tests check this bitwise against
mpmath's eigensolver and against inverse iteration at the exact Z).  The last line is not a
defect: rounding phi_k to float64 alone leaves a ~1e-17 component along phi_1, which adds
~1e-17 sigma_1 to Z phi_k, i.e. ~1e-17 sigma_1 / sigma_k relative (4e-28 -> 1e+8 at L=128).  No
float64 vector can do better, so the guarantee is forward error (and a backward error of a few
1e-17 sigma_1), while the relative residual holds for the high-precision vectors.

Cost on the 2-core development box while it was shared (load ~5), first call, no cache, K=32:
L=128: 1.0 s wall (0.7 s CPU), L=256: 1.4 s (0.9 s CPU), L=1024: 3.5 s (2.3 s CPU);
L=1024, K=64: 8 s (5.4 s CPU).  Three iterations suffice in all these cases.

Caching: in-process (``functools.lru_cache``; callers get copies) and on disk under
``$ESSM_CACHE_DIR`` or ``~/.cache/essm-stream/filters/`` as ``.npz`` written atomically
(temp file + ``os.replace``) and read with ``allow_pickle=False``.  A cached (L, K') file with
K' >= K serves a request for K by slicing (the leading columns do not depend on K).  Unreadable or
inconsistent files are ignored (logged, removed) and recomputed.

Dependencies: python-flint (``[train]`` extra) is imported only when filters must be computed;
loading cached filters needs numpy only.
"""
from __future__ import annotations

import functools
import logging
import math
import operator
import os
import re
import threading
from pathlib import Path

import numpy as np

from .errors import ConfigError

__all__ = ["cache_dir", "clear_cache", "hankel_matrix", "spectral_filters"]

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_TARGET_BITS = 112      # forward error of the high-precision eigenvectors: <= 2^-112 ~ 1.9e-34
_STEP_BITS = 64         # bits gained per iteration the block size is chosen for
_MAX_BITS = 1 << 14     # refuse precisions beyond this (would mean a bug, not a hard matrix)
_MAX_ITER = 40
_SEED = 0x5EC7          # seed of the float64 starting block; the results do not depend on it
_LOCK = threading.Lock()  # Arb's working precision is process-global


# ----------------------------------------------------------------------------------------------
# validation


def _as_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ConfigError(f"{name} must be an int, got {name}={value!r} ({type(value).__name__})")
    value = operator.index(value)
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {name}={value}")
    return value


def _check_LK(L, K) -> tuple[int, int]:
    L = _as_int("L", L, 1)
    K = _as_int("K", K, 1)
    if K > L:
        raise ConfigError(f"K must be <= L, got K={K} > L={L}")
    return L, K


# ----------------------------------------------------------------------------------------------
# the matrix


def hankel_matrix(L: int) -> np.ndarray:
    """Z[i, j] = 2 / ((i+j)^3 - (i+j)), 1-based, as float64 (L, L); every entry correctly rounded.

    (s-1) s (s+1) is formed exactly in int64 (exact in float64 while < 2^53, i.e. L < ~100000),
    so each entry is a single IEEE division.
    """
    L = _as_int("L", L, 1)
    i = np.arange(1, L + 1, dtype=np.int64)
    s = i[:, None] + i[None, :]
    return 2.0 / ((s - 1) * s * (s + 1)).astype(np.float64)


def _hankel_ints(L: int, P: int) -> list[int]:
    """round(2^P * 2 / (s^3 - s)) for s = 2 .. 2L: the Hankel sequence in P-bit fixed point."""
    num = 1 << (P + 2)  # 2N with N = 2^P * 2, and round(N / d) = (2N + d) // (2d)
    return [(num + d) // (2 * d) for d in (s * s * s - s for s in range(2, 2 * L + 1))]


# ----------------------------------------------------------------------------------------------
# high-precision eigensolver


def _decay_bits(k: int, L: int) -> float:
    """Model of log2(sigma_k / sigma_(k+1)), a slight underestimate for 32 <= L <= 2048.

    1.5x the Beckermann-Townsend rate for positive definite Hankel matrices, growing slowly with k;
    fitted to eigenvalues computed by this module (ratio actual/model in [1.01, 1.22]).  It only
    sizes the block and the first precision guess: both are corrected from computed values.
    """
    bt = math.pi**2 / (2.0 * math.log(8.0 * max(L // 2, 1) / math.pi)) / math.log(2.0)
    return 1.5 * bt * (1.0 + 0.25 * math.log(max(k, 8) / 8.0))


def _cgs2(Y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Orthonormal basis of the columns of Y: Gram-Schmidt with one reorthogonalisation.

    Matrix-vector products on purpose: threaded LAPACK QR can be pathologically slow on a loaded
    machine, and this block is thin (L x m, m ~ K + 30).  Columns that are numerically in the span
    of the previous ones are replaced by random vectors (they only need to be independent).
    """
    Q = np.empty_like(Y)
    for j in range(Y.shape[1]):
        v = Y[:, j].copy()
        while True:
            n0 = np.linalg.norm(v)
            for _ in range(2):
                v -= Q[:, :j] @ (Q[:, :j].T @ v)
            n1 = np.linalg.norm(v)
            if n1 > 1e-8 * n0:
                break
            v = rng.standard_normal(Y.shape[0])  # numerically dependent column: replace it
        Q[:, j] = v / n1
    return Q


def _float64_start(L: int, m: int) -> np.ndarray:
    """L x m float64 block whose leading columns approximate the top eigenvectors of Z.

    Only a starting guess: the high-precision iteration converges to the same vectors from any
    start, so machine-dependent BLAS rounding here does not reach the results.
    """
    if m >= L:
        return np.eye(L)
    if L <= 2048:
        Z = hankel_matrix(L)
        matmul = Z.__matmul__
    else:  # Z @ X = T @ X[::-1] with T Toeplitz: FFT products, no L x L matrix in memory
        from scipy.linalg import matmul_toeplitz

        s = np.arange(2, 2 * L + 1, dtype=np.float64)
        h = 2.0 / ((s - 1) * s * (s + 1))  # h[n] = Z[i, j] for i + j = n (0-based)
        c, r = h[L - 1:], h[L - 1::-1]

        def matmul(X):
            return matmul_toeplitz((c, r), X[::-1])

    rng = np.random.Generator(np.random.PCG64(_SEED))
    Q = _cgs2(matmul(rng.standard_normal((L, m))), rng)
    Q = _cgs2(matmul(Q), rng)
    _, U = np.linalg.eigh(Q.T @ matmul(Q))
    return Q @ U[:, ::-1]


def _dyadic_key(x):
    """Overflow-free sort key of an exact dyadic arb midpoint x = man * 2^exp."""
    man, ex = x.man_exp()
    man, ex = int(man), int(ex)
    if man == 0:
        return (0, 0, 0.0)
    sgn = 1 if man > 0 else -1
    nb = abs(man).bit_length()
    return (sgn, sgn * (nb + ex), sgn * (abs(man) / (1 << nb)))


def _scaled_ints(vals, W: int) -> list[int]:
    """Round dyadic arb midpoints to integers sharing one power-of-two scale, largest ~W bits."""
    pairs = [(int(mn), int(ex)) for mn, ex in (v.man_exp() for v in vals)]
    tops = [mn.bit_length() + ex for mn, ex in pairs if mn]
    if not tops:
        return [0] * len(pairs)
    s = W - max(tops)
    out = []
    for mn, ex in pairs:
        e = ex + s
        out.append(mn << e if e >= 0 else (mn + (1 << (-e - 1))) >> (-e))
    return out


def _round_to_bits(col, W: int) -> list:
    """Round a column of integers to W significant bits (one common right shift)."""
    sh = max(abs(x) for x in col).bit_length() - W
    if sh <= 0:
        return list(col)
    half = 1 << (sh - 1)
    return [(x + half) >> sh for x in col]


def _compute(L: int, K: int, *, extra: int | None = None, exact: bool = False):
    """Top-K eigenpairs of Z to float64 accuracy (see the module docstring for the method).

    ``extra``: block size m = K + extra (default: from the decay model).  ``exact``: also return
    the unrounded eigenvectors as lists of Python ints (unnormalised), for verification.
    """
    try:
        from flint import acb_mat, arb, arb_mat, ctx, fmpz, fmpz_mat, fmpz_poly
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "computing spectral filters needs python-flint (pip install 'essm-stream[train]'); "
            "filters already in the cache load without it"
        ) from exc

    T = _TARGET_BITS
    lgL = max(L - 1, 1).bit_length()
    if extra is None:  # enough columns that one step gains ~_STEP_BITS bits at k = K
        extra = max(8, math.ceil(_STEP_BITS / _decay_bits(K, L)))
    m = min(L, K + extra)
    est = 1.5 + 1.2 * sum(_decay_bits(k, L) for k in range(1, K))  # ~log2(1 / gap_K)
    if est > 1100:  # the model underestimates: sigma_K / sigma_1 < 2^-1000 for sure
        raise ConfigError(f"K={K} is too large for L={L}: sigma_K / sigma_1 < 1e-300 "
                          "underflows float64")
    P = T + lgL + math.ceil(est) + 16

    zero = fmpz(0)
    X0 = _float64_start(L, m)
    Y = [[fmpz(v) for v in np.rint(np.ldexp(X0[:, j], 62)).astype(np.int64).tolist()]
         for j in range(m)]

    def rowmajor(cols):
        return [x for row in zip(*cols) for x in row]

    def columns(M):
        e = M.entries()
        return [e[j::m] for j in range(m)]

    hp, hp_bits = None, None
    for it in range(_MAX_ITER):
        if hp_bits != P:
            hp, hp_bits = fmpz_poly(_hankel_ints(L, P)), P
        W = P + 16
        # HY = Hint @ Y exactly: y_i = sum_j h_(i+j) x_j is coefficient L-1+i of h(t) * rev(x)(t)
        HY = []
        for x in Y:
            c = (hp * fmpz_poly(x[::-1])).coeffs()[L - 1:2 * L - 1]
            HY.append(c + [zero] * (L - len(c)))
        Ym, HYm = fmpz_mat(L, m, rowmajor(Y)), fmpz_mat(L, m, rowmajor(HY))
        Yt = Ym.transpose()
        G, A = Yt * Ym, Yt * HYm  # exact; Rayleigh-Ritz of Hint on span(Y): A c = theta G c
        with ctx.workprec(P + 32):
            M = arb_mat(G).solve(arb_mat(A), algorithm="approx") * arb((1, -P))
            E, R = acb_mat(M).eig(right=True, algorithm="approx")
            order = sorted(range(m), key=lambda k: _dyadic_key(E[k].real.mid()), reverse=True)
            C = []
            for k in order:
                col = [R[i, k] for i in range(m)]
                big = max(col, key=lambda z: abs(z).mid())
                phase = big / abs(big)  # real eigenvector up to this unimodular factor
                C.append(_scaled_ints([(z / phase).real.mid() for z in col], W))
        Cm = fmpz_mat(m, m, rowmajor(C))
        Ct = Cm.transpose()
        HV = columns(HYm * Cm)  # Hint @ (Ritz vectors V = Y C), exact
        # a = |V|^2, b = V.Hint V (all m), c = |Hint V|^2 (k < K): exact integers
        a, b = ([int(X[k, k]) for k in range(m)] for X in (Ct * G * Cm, Ct * A * Cm))
        c = [int(sum(y * y for y in HV[k])) for k in range(K)]
        # log2 of the exact Rayleigh quotients theta_k = b_k / (a_k 2^P) (no float underflow)
        lt = [math.log2(b[k]) - math.log2(a[k]) - P if b[k] > 0 else -math.inf
              for k in range(m)]
        # Davis-Kahan: sin angle(v_k, eigenvector) <= ||r_k|| / gap_k, with the exact identity
        # ||r_k||^2 / (theta_k ||v_k||)^2 = (c_k a_k - b_k^2) / b_k^2 for r_k = Z v_k - theta_k v_k
        crit, need_P = -math.inf, 0
        for k in range(K):
            rel_gap = 1.0  # gap_k / theta_k, capped at 1 (also bounds sigma_k's own accuracy)
            if k > 0:
                rel_gap = min(rel_gap, 2.0 ** min(lt[k - 1] - lt[k], 60.0) - 1.0)
            if k + 1 < m:
                rel_gap = min(rel_gap, 1.0 - 2.0 ** max(lt[k + 1] - lt[k], -60.0))
            if not (rel_gap > 0.0 and math.isfinite(lt[k])):  # unresolved at this precision
                crit, need_P = math.inf, P + 64
                break
            num = c[k] * a[k] - b[k] * b[k]
            lres = 0.5 * (math.log2(num) - 2.0 * math.log2(b[k])) if num > 0 else -math.inf
            crit = max(crit, lres - math.log2(rel_gap))
            need_P = max(need_P, T + lgL + math.ceil(-lt[k] - math.log2(rel_gap)) + 8)
        log.debug("hankel L=%d K=%d m=%d it=%d P=%d: log2 error bound %.1f (need P=%d)",
                  L, K, m, it, P, crit, need_P)
        if need_P <= P and lt[K - 1] < -1020:
            raise ConfigError(f"K={K} is too large for L={L}: sigma_K ~ 2^{lt[K - 1]:.0f} "
                              "underflows float64")
        if need_P <= P and crit <= -T:
            break
        if need_P > P or need_P + 48 < P:  # adapt the precision to the computed gaps
            P = need_P + 16
            if P > _MAX_BITS:
                raise RuntimeError(f"spectral_filters(L={L}, K={K}) needs more than "
                                   f"{_MAX_BITS} bits; this should not happen")
        Y = [_round_to_bits(hv, W) for hv in HV]  # next block: Hint @ (Ritz vectors)
    else:
        raise RuntimeError(f"spectral_filters(L={L}, K={K}) did not converge "
                           f"in {_MAX_ITER} iterations")

    V = columns(Ym * Cm)  # the Ritz vectors, exact
    sigma = np.array([b[k] / (a[k] << P) for k in range(K)], dtype=np.float64)
    phi = np.empty((L, K), dtype=np.float64)
    for k in range(K):
        sh = max(0, 300 - a[k].bit_length() // 2)
        nrm = math.isqrt(a[k] << (2 * sh))  # ||v_k|| * 2^sh, >= 300 bits
        phi[:, k] = [(int(x) << sh) / nrm for x in V[k]]  # int / int: correctly rounded
        j = int(np.argmax(np.abs(phi[:, k])))
        if phi[j, k] < 0:
            phi[:, k] = -phi[:, k]
    if not (np.all(sigma > 0) and np.all(np.diff(sigma) < 0)):
        raise RuntimeError(f"spectral_filters(L={L}, K={K}): eigenvalues not positive and "
                           "strictly decreasing; this should not happen")
    if exact:
        return sigma, phi, [[int(x) for x in V[k]] for k in range(K)]
    return sigma, phi


# ----------------------------------------------------------------------------------------------
# disk cache


def cache_dir() -> Path:
    """Directory of the on-disk filter cache: $ESSM_CACHE_DIR, else ~/.cache/essm-stream/filters."""
    env = os.environ.get("ESSM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "essm-stream" / "filters"


_NAME = re.compile(r"^hankel_v(\d+)_L(\d+)_K(\d+)\.npz$")


def _cache_name(L: int, K: int) -> str:
    return f"hankel_v{_FORMAT_VERSION}_L{L}_K{K}.npz"


def _valid(sigma, phi, L: int, K: int) -> bool:
    if not (isinstance(sigma, np.ndarray) and isinstance(phi, np.ndarray)):
        return False
    if sigma.dtype != np.float64 or phi.dtype != np.float64:
        return False
    if sigma.shape != (K,) or phi.shape != (L, K):
        return False
    if not (np.all(np.isfinite(sigma)) and np.all(np.isfinite(phi))):
        return False
    if not (np.all(sigma > 0) and np.all(np.diff(sigma) < 0)):
        return False
    if np.max(np.abs(phi.T @ phi - np.eye(K))) > 1e-12:
        return False
    idx = np.argmax(np.abs(phi), axis=0)
    return bool(np.all(phi[idx, np.arange(K)] > 0))


def _load_disk(L: int, K: int):
    """(sigma, phi) for (L, K) from the smallest valid cached file with K' >= K, else None."""
    d = cache_dir()
    try:
        names = os.listdir(d)
    except OSError:
        return None
    found = []
    for name in names:
        mt = _NAME.match(name)
        if mt and int(mt[1]) == _FORMAT_VERSION and int(mt[2]) == L and int(mt[3]) >= K:
            found.append((int(mt[3]), name))
    for Kc, name in sorted(found):
        path = d / name
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = (int(z["version"]), int(z["L"]), int(z["K"]))
                sigma, phi = z["sigma"], z["phi"]
            ok = meta == (_FORMAT_VERSION, L, Kc) and _valid(sigma, phi, L, Kc)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is just a cache miss
            log.warning("ignoring unreadable filter cache file %s (%s: %s)",
                        path, type(exc).__name__, exc)
            ok = False
        if not ok:
            log.warning("removing invalid filter cache file %s", path)
            try:
                path.unlink()
            except OSError:
                pass
            continue
        log.debug("loaded spectral filters L=%d K=%d from %s", L, K, path)
        return np.ascontiguousarray(sigma[:K]), np.ascontiguousarray(phi[:, :K])
    return None


def _save_disk(L: int, K: int, sigma: np.ndarray, phi: np.ndarray) -> None:
    import io

    from .fileio import atomic_write_bytes
    buf = io.BytesIO()
    np.savez(buf, version=np.int64(_FORMAT_VERSION), L=np.int64(L), K=np.int64(K), sigma=sigma, phi=phi)
    try:   # the umask decides who may read the cache, as for every other file the project writes
        atomic_write_bytes(cache_dir() / _cache_name(L, K), buf.getvalue())
    except OSError as exc:
        log.warning("could not write the filter cache in %s: %s", cache_dir(), exc)


# ----------------------------------------------------------------------------------------------
# public API


@functools.lru_cache(maxsize=32)
def _filters(L: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    hit = _load_disk(L, K)
    if hit is None:
        log.info("computing spectral filters L=%d K=%d in extended precision", L, K)
        with _LOCK:
            sigma, phi = _compute(L, K)
        _save_disk(L, K, sigma, phi)
    else:
        sigma, phi = hit
    sigma.setflags(write=False)
    phi.setflags(write=False)
    return sigma, phi


def spectral_filters(L: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-K eigenpairs (sigma, phi) of the L x L Hankel matrix Z (see the module docstring).

    Returns ``sigma`` float64 (K,), strictly decreasing and > 0, each correctly rounded from the
    exact eigenvalue, and ``phi`` float64 (L, K) whose column k is the exact unit eigenvector for
    sigma[k] rounded to float64, sign-fixed so that its entry of largest magnitude is positive.
    Results are cached in memory and on disk; the arrays returned are fresh copies.
    Raises ConfigError for L, K that are not ints with 1 <= K <= L.
    """
    L, K = _check_LK(L, K)
    sigma, phi = _filters(L, K)
    return sigma.copy(), phi.copy()


def clear_cache() -> None:
    """Forget the in-memory filters (the disk cache is left alone)."""
    _filters.cache_clear()
