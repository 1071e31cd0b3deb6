"""Plain numpy float64 references of the ES-SSM forward, written for clarity, not speed.

Every fast path (the torch FFT layer, the numba streaming engine) is held to these in tests. They
read weights only in the layout of `ESSMLayer.export_weights()` / `ESSMModel.export_weights()`,
use a direct-sum causal convolution (no FFT) and loop over time, so a budget that changes at every
step is handled exactly as the definition says. Torch-free.
"""
from __future__ import annotations

import math

import numpy as np

from .config import ESSMConfig


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x Φ(x) with the error function."""
    from scipy.special import erf
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def budgets(K, T: int) -> np.ndarray:
    """A budget per step, (T,), from an int or a (T,) array."""
    return np.broadcast_to(np.asarray(K, dtype=np.int64), (T,)).copy()


def mixture_weights_ref(u_t: np.ndarray, w: dict, K: int, eps: float = 1e-6) -> np.ndarray:
    """α (K̄,) at one step: Eq. 8 if the layer has a gate, else 1 on the active prefix (Eq. 6)."""
    k_max = w["sigma"].shape[0]
    alpha = np.zeros(k_max)
    if "W1" not in w:
        alpha[:K] = 1.0
        return alpha
    s = w["W2"] @ gelu(w["W1"] @ u_t + w["b1"]) + w["b2"]          # (K̄,)  Eq. 8c
    s_act = s[:K]
    s_tilde = s_act * math.sqrt(K) / (np.sqrt(np.sum(s_act ** 2)) + eps)  # Eq. 8b
    e = np.exp(s_tilde - s_tilde.max())
    alpha[:K] = e / e.sum()                                        # Eq. 8a
    return alpha


def layer_ref(u: np.ndarray, w: dict, K, eps: float = 1e-6) -> np.ndarray:
    """One ES-SSM layer on one sequence, u (T, d) -> (T, d); K an int or (T,) budgets.

    y(t) = D u(t) + Σ_{k≤K(t)} α_k(t) σ_k^{1/4} M_k Σ_{τ<L} φ_k(τ) u(t-τ).
    """
    T, d = u.shape
    phi, sigma, M, D = w["phi"], w["sigma"], w["M"], w["D"]
    L = phi.shape[0]
    Ks = budgets(K, T)
    y = np.zeros((T, d))
    for t in range(T):
        k = int(Ks[t])
        alpha = mixture_weights_ref(u[t], w, k, eps)
        y[t] = D @ u[t]
        for c in range(k):
            conv = np.zeros(d)
            for tau in range(min(L, t + 1)):
                conv += phi[tau, c] * u[t - tau]
            y[t] += alpha[c] * sigma[c] ** 0.25 * (M[c] @ conv)
    return y


def model_ref(x: np.ndarray, w: dict, cfg: ESSMConfig, K) -> np.ndarray:
    """The whole model on one sequence, x (T, d_in) -> (T, d_out); weights from ESSMModel.export_weights()."""
    T = x.shape[0]
    h = x @ w["inp.W"].T + w["inp.b"]
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        lw = {k[len(p) + 5:]: v for k, v in w.items() if k.startswith(p + "essm.")}
        h = h + layer_ref(layer_norm(h, w[p + "ln1.g"], w[p + "ln1.b"], cfg.ln_eps), lw, K, cfg.gate_eps)
        if cfg.mlp:
            z = layer_norm(h, w[p + "ln2.g"], w[p + "ln2.b"], cfg.ln_eps)
            h = h + gelu(z @ w[p + "fc1.W"].T + w[p + "fc1.b"]) @ w[p + "fc2.W"].T + w[p + "fc2.b"]
    y = layer_norm(h, w["ln_f.g"], w["ln_f.b"], cfg.ln_eps) @ w["out.W"].T + w["out.b"]
    if cfg.head == "mean" and cfg.pool_window > 1:
        W = cfg.pool_window
        y = np.stack([y[max(0, t - W + 1): t + 1].mean(0) for t in range(T)])
    return y
