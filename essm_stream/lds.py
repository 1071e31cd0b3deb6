"""The Hankel filter bank as a small state-space ladder: O(N) per step instead of O(L).

A layer convolves its input with the K̄ filters h_k(τ) = σ_k^{1/4} φ_k(τ), τ < L (DESIGN.md). These
filters lie close to the span of a few real decaying exponentials, so a shared state of N ≪ L real
poles reproduces all of them. This module fits that state in float64 at compile time and gives a
plain reference stepper for it; the engine's kernel is held to that reference.

Fit (`fit_ladder`)
------------------
* Poles: the eigenvalues of an ERA realization (Eigensystem Realization Algorithm) of the filter
  samples: the block Hankel matrix H[(i, k), j] = h_k(i + j), i + j < L, with L/2 columns, is
  factored by a randomized SVD whose products with H run as FFT correlations (H has ~K̄·L²/4
  entries, never formed). Its singular values are the Hankel singular values (HSVs): the leading
  n of them say how much of the bank an order-n state can hold, and choose where the search for N
  starts. The order-n ERA poles must be real and inside (0, 1); when they are not, the fallback
  is n poles with 1 - a geometric over [8/L, 1]. Every N is checked by its measured fit error.
* Poles are rounded to float32 before the readout is fitted, so a float32 engine runs exactly
  the poles the fit was made for (only arithmetic rounding differs).
* Readout: least squares over τ ∈ [0, L) onto the ladder's basis (below); per-filter error
  err_k = ||h̃_k - h_k||_2 / max_j ||h_j||_2 (relative to the bank's largest filter, σ^{1/4}
  included, so it is the share of the layer's spectral signal lost). With weights w_k (e.g.
  ||M_k||_op), the tolerance applies to max_k w_k ||h̃_k - h_k|| / max_j w_j ||h_j||.

Ladder (Takenaka–Malmquist)
---------------------------
The state is a chain of first-order all-pass sections, not N parallel poles (whose readout needs
coefficients ~3e6 and loses float32 at 1e-3). Section n keeps one number v_n per channel:

    w_0 = u(t)
    v_n(t) = a_n v_n(t-1) + w_{n-1}(t)           (1 / (1 - a_n z^-1) applied to w_{n-1})
    w_n(t) = v_n(t-1) - a_n v_n(t)               (the all-pass (z^-1 - a_n) / (1 - a_n z^-1))
    x_n(t) = sqrt(1 - a_n^2) v_n(t)              (orthonormal basis functions over [0, ∞))
    c_k(t) = Σ_n C[k, n] x_n(t)                  (the readout; |C| <= max ||h_k||)

Written as s(t) = A s(t-1) + b u(t) (A lower triangular, s = v), the response to an impulse is
the Takenaka–Malmquist basis, orthonormal in ℓ2[0, ∞), so the readout is O(1) and well scaled.

Window correction (buffered mode, the default): the ladder's impulse response continues past L,
the FIR does not. The tail Σ_{τ≥L} A^τ b u(t-τ) = A^L s(t-L) is removed by feeding the input that
leaves the window, u(t-L) (the engine's ring buffer holds it), through b_L = A^L b:

    s(t) = A s(t-1) + b u(t) - b_L u(t-L)

so s(t) = Σ_{τ<L} A^τ b u(t-τ) exactly, the streamed output equals Σ_{τ<L} h̃_k(τ) u(t-τ), its
error is the fit error, and rounding errors decay with the poles instead of accumulating.

No-buffer mode (buffered=False; for MCU-class targets, memory O(N·d) with no ring of L inputs,
accuracy ~1e-2, NOT the default): no correction; the readout is the orthogonal projection of the
truncated filters (h on [0, L), zero after) onto the basis over [0, ∞), C = G[:L]^T h, and the
error is measured over [0, ∞) (Parseval: ||h||² - ||C||²).
"""
from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from .errors import ConfigError

__all__ = ["LadderFit", "scaled_filters", "hankel_svd", "era_poles", "geometric_poles",
           "ladder_basis", "window_vector", "fit_readout", "fit_ladder", "error_curve",
           "ladder_filter_ref", "ladder_step_ref", "fir_filter_ref", "fit_layers", "m_weights",
           "validate_spectral", "check_lds_arrays", "lds_program"]

log = logging.getLogger(__name__)

N_MAX_DEFAULT = 64
_SEED = 0x1D5


@dataclasses.dataclass(frozen=True)
class LadderFit:
    """A fitted ladder for one filter bank. Arrays are float64 (poles hold float32-exact values)."""
    poles: np.ndarray      # (N,) real, in (0, 1), chain order
    C: np.ndarray          # (K, N) readout of the orthonormal basis x_n
    bL: np.ndarray         # (N,) window-correction input vector A^L b (zeros if not buffered)
    err: np.ndarray        # (K,) per-filter error relative to the bank's largest filter
    hsv: np.ndarray        # normalized Hankel singular values, descending (hsv[0] = 1)
    L: int
    tol: float
    buffered: bool
    source: str            # "era" or "geometric" (the fallback)
    weighted_err: float    # the quantity held to tol (max_k err_k unless weights were given)

    @property
    def N(self) -> int:
        return int(self.poles.shape[0])

    @property
    def readout_v(self) -> np.ndarray:
        """(K, N) readout of the raw section states v_n: C[k, n] sqrt(1 - a_n^2)."""
        return self.C * np.sqrt(1.0 - self.poles ** 2)[None, :]


# ----------------------------------------------------------------------------------------------
# input


def scaled_filters(phi: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The filters the model convolves with: h[τ, k] = σ_k^{1/4} φ_k(τ), (L, K) float64."""
    phi = np.asarray(phi, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if phi.ndim != 2 or sigma.shape != (phi.shape[1],):
        raise ConfigError(f"phi must be (L, K) and sigma (K,), got {phi.shape} and {sigma.shape}")
    if np.any(sigma <= 0) or not np.all(np.isfinite(phi)):
        raise ConfigError("sigma must be > 0 and phi finite (Hankel eigenpairs)")
    return phi * sigma[None, :] ** 0.25


def _check_bank(h) -> np.ndarray:
    h = np.asarray(h, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] < 4 or h.shape[1] < 1:
        raise ConfigError(f"filter bank must be (L >= 4, K >= 1), got shape {h.shape}")
    if not np.all(np.isfinite(h)) or not np.any(h):
        raise ConfigError("filter bank must be finite and not all zero")
    return h


# ----------------------------------------------------------------------------------------------
# ERA: Hankel SVD by FFT correlations


class _Hankel:
    """H_s[(k, i), j] = h_k(i + j + s), i < r, j < c (s = 0 or 1), applied through FFTs."""

    def __init__(self, h: np.ndarray, c: int):
        self.L, self.K = h.shape
        self.c = c                       # columns of H_0 (and H_1)
        self.r = self.L - c              # rows per filter: i + j + 1 <= L - 1 for H_1
        self.nfft = 1 << int(math.ceil(math.log2(self.L + max(self.r, c) + 1)))
        self.hf = np.fft.rfft(h, self.nfft, axis=0)          # (nfft/2+1, K)

    def matvec(self, X: np.ndarray) -> np.ndarray:
        """H_0 X: X (c, p) -> (K r, p); (H_0 X)[(k,i)] = Σ_j h_k(i+j) X[j] = (h_k ⋆ X)[i + c - 1]."""
        c, r = self.c, self.r
        xf = np.fft.rfft(X[::-1], self.nfft, axis=0)           # reversed: correlation as convolution
        out = np.empty((self.K, r, X.shape[1]))
        for k in range(self.K):
            out[k] = np.fft.irfft(self.hf[:, k, None] * xf, self.nfft, axis=0)[c - 1:c - 1 + r]
        return out.reshape(self.K * r, X.shape[1])

    def rmatvec(self, Y: np.ndarray, s: int = 0) -> np.ndarray:
        """H_s^T Y: Y (K r, p) -> (c, p); Σ_k Σ_i h_k(i + j + s) Y[(k, i)]."""
        c, r = self.c, self.r
        Y3 = Y.reshape(self.K, r, -1)
        acc = np.zeros((self.nfft // 2 + 1, Y.shape[1]), dtype=np.complex128)
        for k in range(self.K):
            acc += self.hf[:, k, None] * np.fft.rfft(Y3[k, ::-1], self.nfft, axis=0)
        full = np.fft.irfft(acc, self.nfft, axis=0)
        return full[r - 1 + s:r - 1 + s + c]


@dataclasses.dataclass(frozen=True)
class EraFactors:
    s: np.ndarray      # singular values of H_0 (descending, not normalized)
    Ub: np.ndarray     # (p, p) left singular vectors in the basis Q
    Vt: np.ndarray     # (p, c) right singular vectors
    QH1: np.ndarray    # (p, c) Q^T H_1


def _one_blas_thread():
    """Single-threaded BLAS while fitting: the QRs here are small, and a multi-threaded OpenBLAS on a
    busy machine spent 10-40x longer in them (busy-waiting threads). No-op without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def hankel_svd(h: np.ndarray, rank: int = 96, power_iters: int = 2, seed: int = _SEED) -> EraFactors:
    """Leading `rank` singular triplets of the block Hankel matrix of the bank (randomized SVD).

    H_0 has L/2 columns (lags up to L/2, so the slowest poles are resolved). The spectrum falls by
    ~16 orders within ~40 values, so `rank` = 96 with two power iterations reproduces the leading
    ~40 values to float64 working accuracy.
    """
    h = _check_bank(h)
    with _one_blas_thread():
        return _hankel_svd(h, rank, power_iters, seed)


def _hankel_svd(h, rank, power_iters, seed) -> EraFactors:
    L = h.shape[0]
    c = max(2, L // 2)
    H = _Hankel(h, c)
    p = min(rank, c, H.K * H.r)
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(H.matvec(rng.standard_normal((c, p))))
    for _ in range(power_iters):
        Z, _ = np.linalg.qr(H.rmatvec(Q))
        Q, _ = np.linalg.qr(H.matvec(Z))
    B = H.rmatvec(Q).T                                       # (p, c) = Q^T H_0
    Ub, s, Vt = np.linalg.svd(B, full_matrices=False)
    return EraFactors(s=s, Ub=Ub, Vt=Vt, QH1=H.rmatvec(Q, s=1).T)


def era_poles(f: EraFactors, n: int) -> np.ndarray:
    """Poles (complex eigenvalues) of the order-n balanced ERA realization A = Σ^-½ U^T H_1 V Σ^-½."""
    if not 1 <= n <= len(f.s):
        raise ConfigError(f"ERA order n={n} is outside [1, {len(f.s)}]")
    sn = np.sqrt(f.s[:n])
    A = (f.Ub[:, :n].T @ f.QH1 @ f.Vt[:n].T) / sn[:, None] / sn[None, :]
    return np.linalg.eigvals(A)


def _real_unit_poles(p: np.ndarray) -> np.ndarray | None:
    """Sorted real parts if every pole is real (to 1e-9) and inside (0, 1) after float32 rounding."""
    if np.max(np.abs(p.imag), initial=0.0) > 1e-9:
        return None
    a = np.sort(p.real.astype(np.float32).astype(np.float64))
    if a[0] <= 0.0 or a[-1] >= 1.0 or len(np.unique(a)) != len(a):
        return None
    return a


def geometric_poles(L: int, n: int) -> np.ndarray:
    """The fallback: n poles with 1 - a geometric over [8/L, 1] (a in [0, 1 - 8/L]), float32-exact.
    (a = 0 at the fast end is a pure delay section; kept as 1e-3 so every pole is inside (0, 1).)"""
    lo = min(8.0 / L, 0.5)
    a = 1.0 - np.geomspace(lo, 1.0, n) if n > 1 else np.array([1.0 - lo])
    a = np.clip(a, 1e-3, None)
    return np.sort(a.astype(np.float32).astype(np.float64))


# ----------------------------------------------------------------------------------------------
# the ladder's basis and the readout


def ladder_basis(poles: np.ndarray, T: int) -> np.ndarray:
    """(T, N) impulse responses of the orthonormal basis x_n (float64, vectorized by lfilter)."""
    from scipy.signal import lfilter
    a = np.asarray(poles, dtype=np.float64)
    G = np.empty((T, len(a)))
    w = np.zeros(T)
    w[0] = 1.0
    for n, an in enumerate(a):
        v = lfilter([1.0], [1.0, -an], w)                    # v_n = w_{n-1} / (1 - a z^-1)
        G[:, n] = math.sqrt(1.0 - an * an) * v
        w = np.concatenate(([0.0], v[:-1])) - an * v         # w_n = v(t-1) - a v(t)
    return G


def window_vector(poles: np.ndarray, L: int) -> np.ndarray:
    """b_L = A^L b: the state L steps after a unit impulse (what u(t-L) must take back out)."""
    a = np.asarray(poles, dtype=np.float64)
    v = np.zeros(len(a))
    for t in range(L + 1):                                   # the impulse at t = 0, then L steps
        w = 1.0 if t == 0 else 0.0
        for n in range(len(a)):
            vn = a[n] * v[n] + w
            w = v[n] - a[n] * vn
            v[n] = vn
    return v


def fit_readout(h: np.ndarray, poles: np.ndarray, buffered: bool = True,
                G: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Readout C (K, N) and absolute per-filter errors ||h̃_k - h_k||_2 (K,)."""
    L = h.shape[0]
    if G is None:
        G = ladder_basis(poles, L)
    if buffered:
        C = np.linalg.lstsq(G, h, rcond=None)[0].T           # (K, N)
        err = np.linalg.norm(G @ C.T - h, axis=0)
    else:
        C = (G.T @ h).T                                      # projection onto an ℓ2[0,∞) orthonormal basis
        # residual over [0, ∞): on [0, L) directly, after L by Parseval (the basis tail's energy)
        tail = np.maximum(np.sum(C * C, axis=1) - np.sum((G @ C.T) ** 2, axis=0), 0.0)
        err = np.sqrt(np.linalg.norm(G @ C.T - h, axis=0) ** 2 + tail)
    return C, err


def _weighted(err_abs, h, weights):
    if weights is None:
        return float(np.max(err_abs) / np.max(np.linalg.norm(h, axis=0)))
    w = np.asarray(weights, dtype=np.float64)
    return float(np.max(w * err_abs) / np.max(w * np.linalg.norm(h, axis=0)))


def _candidates(f: EraFactors, h, n, buffered, weights):
    """(source, poles, C, err_abs, weighted) for the ERA poles at order n, and the fallback."""
    L = h.shape[0]
    out = []
    if n <= len(f.s):
        a = _real_unit_poles(era_poles(f, n))
        if a is not None:
            C, e = fit_readout(h, a, buffered)
            out.append(("era", a, C, e, _weighted(e, h, weights)))
    a = geometric_poles(L, n)
    C, e = fit_readout(h, a, buffered)
    out.append(("geometric", a, C, e, _weighted(e, h, weights)))
    return out


def _check_args(tol, n_max, weights, K):
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (0 < tol < 1):
        raise ConfigError(f"tol must be a number in (0, 1), got tol={tol!r}")
    if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 1:
        raise ConfigError(f"n_max must be an int >= 1, got n_max={n_max!r}")
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (K,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
            raise ConfigError(f"weights must be ({K},) finite, >= 0 and not all zero, got shape {w.shape}")


def fit_ladder(h: np.ndarray, tol: float = 1e-3, n_max: int = N_MAX_DEFAULT, buffered: bool = True,
               weights: np.ndarray | None = None, factors: EraFactors | None = None) -> LadderFit:
    """The smallest ladder whose measured error is <= tol (see the module doc).

    h: (L, K) float64 filter bank (σ^{1/4} included; `scaled_filters`). Raises ConfigError when
    no N <= n_max reaches tol (the message gives the best error found).
    """
    h = _check_bank(h)
    L, K = h.shape
    _check_args(tol, n_max, weights, K)
    f = factors if factors is not None else hankel_svd(h if weights is None else h * np.asarray(weights)[None, :])
    with _one_blas_thread():
        return _fit_ladder(h, tol, n_max, buffered, weights, f)


def _fit_ladder(h, tol, n_max, buffered, weights, f) -> LadderFit:
    L, K = h.shape
    hsv = f.s / f.s[0]
    # Start the search low (half the number of HSVs above tol/100; the chosen N has always been
    # higher) and let the measured error decide: the HSVs size the state, the fit checks it.
    n0 = max(1, int(np.sum(hsv[1:] > tol * 1e-2)) // 2)
    best = None
    for n in range(min(n0, n_max), n_max + 1):
        for src, a, C, e, we in _candidates(f, h, n, buffered, weights):
            if best is None or we < best[4]:
                best = (src, a, C, e, we)
            if we <= tol:
                scale = np.max(np.linalg.norm(h, axis=0))
                log.info("ladder L=%d: N=%d (%s poles), error %.2e <= tol %.1e", L, n, src, we, tol)
                return LadderFit(poles=a, C=C, bL=window_vector(a, L) if buffered else np.zeros(n),
                                 err=e / scale, hsv=hsv, L=L, tol=float(tol), buffered=buffered,
                                 source=src, weighted_err=we)
    raise ConfigError(f"no ladder with N <= {n_max} reaches tol={tol:g} at L={L} "
                      f"(best: N={len(best[1])}, error {best[4]:.2e}); raise n_max or tol")


def error_curve(h: np.ndarray, ns, buffered: bool = True, weights=None,
                factors: EraFactors | None = None) -> dict:
    """For each n: the best measured error and its pole source (for `essm-stream analyze`)."""
    h = _check_bank(h)
    f = factors if factors is not None else hankel_svd(h)
    rows = []
    for n in ns:
        cands = _candidates(f, h, int(n), buffered, weights)
        src, a, C, e, we = min(cands, key=lambda c: c[4])
        rows.append({"N": int(n), "error": we, "source": src,
                     "era_valid": any(c[0] == "era" for c in cands)})
    return {"hsv": (f.s / f.s[0]).tolist(), "rows": rows}


# ----------------------------------------------------------------------------------------------
# plain float64 references (loops, written for clarity)


def ladder_step_ref(v: np.ndarray, u: np.ndarray, u_old: np.ndarray, poles: np.ndarray,
                    bL: np.ndarray) -> None:
    """One step of the corrected ladder for d channels, in place: v (N, d) section states,
    u (d,) the new input, u_old (d,) the input leaving the window (u(t-L)); bL zero = no buffer."""
    N, d = v.shape
    for j in range(d):
        w = u[j]
        for n in range(N):
            vn = poles[n] * v[n, j] + w
            w = v[n, j] - poles[n] * vn
            v[n, j] = vn - bL[n] * u_old[j]


def ladder_filter_ref(U: np.ndarray, fit: LadderFit, K: int | None = None) -> np.ndarray:
    """Stream U (T, d) through the ladder from a zero state: c (T, K, d), c[t, k] ≈ (h_k * u)(t)."""
    U = np.asarray(U, dtype=np.float64)
    T, d = U.shape
    K = fit.C.shape[0] if K is None else K
    Cv = fit.readout_v[:K]
    v = np.zeros((fit.N, d))
    out = np.empty((T, K, d))
    zero = np.zeros(d)
    for t in range(T):
        u_old = U[t - fit.L] if t >= fit.L else zero
        ladder_step_ref(v, U[t], u_old, fit.poles, fit.bL)
        out[t] = Cv @ v
    return out


def fir_filter_ref(U: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The exact sliding-window FIR: out[t, k, j] = Σ_{τ<L} h[τ, k] U[t-τ, j], zero before the start."""
    U = np.asarray(U, dtype=np.float64)
    T, d = U.shape
    L, K = h.shape
    out = np.zeros((T, K, d))
    for t in range(T):
        n = min(t + 1, L)
        out[t] = h[:n].T @ U[t - n + 1:t + 1][::-1]
    return out


# ----------------------------------------------------------------------------------------------
# a whole program's banks (compile time)


def fit_layers(phir: np.ndarray, sigma: np.ndarray, tol: float = 1e-3, buffered: bool = True,
               weights: np.ndarray | None = None, n_max: int = N_MAX_DEFAULT,
               progress: bool = False) -> tuple[dict, dict]:
    """Fit every layer's bank of a program and lay the ladders out for the engine.

    phir (n_layers, K̄, L) reversed filters and sigma (n_layers, K̄) as stored in a program; weights
    (n_layers, K̄) or None. Layers with identical banks (and weights) are fitted once. Returns
    (arrays, record): arrays "lds.a" (n_layers, N), "lds.bL" (n_layers, N), "lds.C" (n_layers, K̄, N)
    (readout of the raw section states reproducing φ_k: σ_k^{1/4} stays folded in Mcat), "lds.err" (n_layers, K̄) the measured per-filter error,
    with N the largest layer's size (a smaller layer is padded at the END of its chain with
    sections a = 0, b_L = 0, C = 0, which never reach an output); record: the plain-JSON summary
    {"mode", "tol", "buffered", "weighted", "n_max", "n": [N_l], "source": [...], "error": [max_k err]}.
    """
    import hashlib
    phir = np.asarray(phir, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if phir.ndim != 3 or sigma.shape != phir.shape[:2]:
        raise ConfigError(f"phir must be (n_layers, K, L) and sigma (n_layers, K), got {phir.shape}, {sigma.shape}")
    nl, Kb, L = phir.shape
    if weights is not None and np.asarray(weights).shape != (nl, Kb):
        raise ConfigError(f"weights must be (n_layers, K) = ({nl}, {Kb}), got {np.asarray(weights).shape}")
    fits, cache = [], {}
    it = range(nl)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="fitting ladders", unit="layer")
    for l in it:
        h = scaled_filters(phir[l, :, ::-1].T, sigma[l])
        w = None if weights is None else np.asarray(weights[l], dtype=np.float64)
        key = hashlib.sha256(h.tobytes() + (b"" if w is None else w.tobytes())).hexdigest()
        if key not in cache:
            cache[key] = fit_ladder(h, tol, n_max=n_max, buffered=buffered, weights=w)
        fits.append(cache[key])
    N = max(f.N for f in fits)
    a, bL = np.zeros((nl, N)), np.zeros((nl, N))
    C, err = np.zeros((nl, Kb, N)), np.zeros((nl, Kb))
    for l, f in enumerate(fits):
        # the program's Mcat already holds σ_k^{1/4} (as for the exact FIR's φ), so the stored
        # readout reproduces φ_k itself: the fit's readout of h_k = σ_k^{1/4} φ_k over σ_k^{1/4}
        a[l, :f.N], bL[l, :f.N], err[l] = f.poles, f.bL, f.err
        C[l, :, :f.N] = f.readout_v / sigma[l][:, None] ** 0.25
    record = {"mode": "lds", "tol": float(tol), "buffered": bool(buffered), "weighted": weights is not None,
              "n_max": int(n_max), "n": [f.N for f in fits], "source": [f.source for f in fits],
              "error": [f.weighted_err for f in fits]}
    return {"lds.a": a, "lds.bL": bL, "lds.C": C, "lds.err": err}, record


def m_weights(Mcat: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """||M_k||_op per layer and filter (n_layers, K̄) from a program's Mcat = [D | σ_k^{1/4} M_k]."""
    nl, d, _ = Mcat.shape
    Kb = sigma.shape[1]
    Ms = Mcat[:, :, d:].reshape(nl, d, Kb, d).transpose(0, 2, 1, 3)          # (nl, K̄, d, d)
    return np.linalg.norm(Ms, ord=2, axis=(2, 3)) / sigma ** 0.25


# ----------------------------------------------------------------------------------------------
# the program's record of its spectral mode

SPECTRAL_MODES = ("exact", "lds")
RECORD_KEYS = {"mode", "tol", "buffered", "weighted", "n_max", "n", "source", "error"}
LDS_ARRAYS = ("lds.a", "lds.bL", "lds.C", "lds.err")


def validate_spectral(record, n_layers: int) -> dict | None:
    """Check a program's spectral record (None or {"mode": "exact"} = the ring-buffer FIR; an LDS
    record as `fit_layers` returns it). Returns a plain-JSON copy, or None for exact. Raises
    ConfigError naming the bad field."""
    import json
    if record is None:
        return None
    if not isinstance(record, dict):
        raise ConfigError(f"spectral record must be a dict or None, got {type(record).__name__}")
    mode = record.get("mode")
    if mode not in SPECTRAL_MODES:
        raise ConfigError(f"spectral mode must be one of {SPECTRAL_MODES}, got {mode!r}")
    if mode == "exact":
        if set(record) != {"mode"}:
            raise ConfigError(f"an exact spectral record has only 'mode', got keys {sorted(record)}")
        return None
    missing, extra = sorted(RECORD_KEYS - set(record)), sorted(set(record) - RECORD_KEYS)
    if missing or extra:
        raise ConfigError(f"LDS spectral record: keys missing {missing}, unexpected {extra}")
    tol = record["tol"]
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ConfigError(f"LDS spectral record: tol must be in (0, 1), got {tol!r}")
    for key in ("buffered", "weighted"):
        if not isinstance(record[key], bool):
            raise ConfigError(f"LDS spectral record: {key} must be a bool, got {record[key]!r}")
    n = record["n"]
    if not isinstance(n, list) or len(n) != n_layers or \
            not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in n):
        raise ConfigError(f"LDS spectral record: n must list {n_layers} ints >= 1 (one per layer), got {n!r}")
    for key, ok in (("source", lambda v: v in ("era", "geometric")),
                    ("error", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                     and math.isfinite(v) and v >= 0)):
        vals = record[key]
        if not isinstance(vals, list) or len(vals) != n_layers or not all(ok(v) for v in vals):
            raise ConfigError(f"LDS spectral record: {key} must list {n_layers} valid values, got {vals!r:.80}")
    return json.loads(json.dumps(record, allow_nan=False))


def check_lds_arrays(arrays: dict, record: dict) -> None:
    """Consistency of the ladder arrays with the record: poles in (0, 1) on each layer's first n_l
    sections, zero padding after them (so padding never reaches an output)."""
    a, bL, C = arrays["lds.a"], arrays["lds.bL"], arrays["lds.C"]
    for l, n in enumerate(record["n"]):
        if n > a.shape[1]:
            raise ConfigError(f"LDS layer {l}: n={n} exceeds the arrays' {a.shape[1]} sections")
        if not np.all((a[l, :n] > 0) & (a[l, :n] < 1)):
            raise ConfigError(f"LDS layer {l}: poles must lie in (0, 1), got {a[l, :n]}")
        if np.any(a[l, n:]) or np.any(bL[l, n:]) or np.any(C[l, :, n:]):
            raise ConfigError(f"LDS layer {l}: sections past n={n} must be zero padding")
        if not record["buffered"] and np.any(bL[l]):
            raise ConfigError(f"LDS layer {l}: a no-buffer ladder has no window vector (lds.bL must be 0)")
    if np.any(arrays["lds.err"] < 0):
        raise ConfigError("lds.err (per-filter error) must be >= 0")


def lds_program(prog, tol: float = 1e-3, buffered: bool = True, weighted: bool = False,
                n_max: int = N_MAX_DEFAULT, progress: bool = False):
    """An exact StreamProgram -> the same weights with the spectral stage as a ladder (torch-free).

    The ladders are fitted to the program's own filters (phir, σ^{1/4}), which are kept in the
    program for the record and for `essm-stream analyze`."""
    from .program import StreamProgram
    if getattr(prog, "spectral", None) is not None:
        raise ConfigError("this program is already in LDS mode; convert its exact original instead")
    arrays = {k: np.array(v) for k, v in prog.arrays.items()}
    w = m_weights(arrays["Mcat"], arrays["sigma"]) if weighted else None
    extra, record = fit_layers(arrays["phir"], arrays["sigma"], tol=tol, buffered=buffered, weights=w,
                               n_max=n_max, progress=progress)
    arrays.update(extra)
    out = StreamProgram(prog.cfg, arrays, provenance=dict(prog.provenance), frontend=prog.frontend,
                        budget_profile=prog.budget_profile, spectral=record)
    return out
