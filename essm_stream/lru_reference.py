"""Plain numpy float64 reference of the LRU model: the recurrence as a loop over time, for clarity.

Reads weights only in the layout of `LRUModel.export_weights()`; torch-free. The torch parallel
(chunked Toeplitz) path, the torch step path and the streaming engine are held to it in tests.
"""
from __future__ import annotations

import numpy as np

from .lru_config import LRUConfig
from .reference import gelu, layer_norm


def lru_system_ref(w: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(λ (N,), B̃ = γB (N, d), C (d, N)) complex128 from one layer's raw weights."""
    lam = np.exp(-np.exp(w["nu"]) + 1j * np.exp(w["theta"]))
    gamma = np.sqrt(1.0 - np.abs(lam) ** 2)
    return lam, (w["B_re"] + 1j * w["B_im"]) * gamma[:, None], w["C_re"] + 1j * w["C_im"]


def lru_layer_ref(u: np.ndarray, w: dict, x0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One LRU on one sequence, u (T, d) -> (y (T, d), last state (N,)).

    x(t) = λ x(t−1) + γ B u(t),  y(t) = Re(C x(t)) + D u(t),  x(−1) = x0 (zero by default).
    """
    lam, Bt, C = lru_system_ref(w)
    x = np.zeros(lam.shape[0], np.complex128) if x0 is None else np.array(x0, np.complex128)
    y = np.zeros(u.shape)
    for t in range(u.shape[0]):
        x = lam * x + Bt @ u[t]
        y[t] = (C @ x).real + w["D"] * u[t]
    return y, x


def lru_model_ref(x: np.ndarray, w: dict, cfg: LRUConfig) -> np.ndarray:
    """The whole LRU model on one sequence, x (T, d_in) -> (T, d_out)."""
    T = x.shape[0]
    h = x @ w["inp.W"].T + w["inp.b"]
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        lw = {k[len(p) + 4:]: v for k, v in w.items() if k.startswith(p + "lru.")}
        h = h + lru_layer_ref(layer_norm(h, w[p + "ln1.g"], w[p + "ln1.b"], cfg.ln_eps), lw)[0]
        if cfg.mlp:
            z = layer_norm(h, w[p + "ln2.g"], w[p + "ln2.b"], cfg.ln_eps)
            h = h + gelu(z @ w[p + "fc1.W"].T + w[p + "fc1.b"]) @ w[p + "fc2.W"].T + w[p + "fc2.b"]
    y = layer_norm(h, w["ln_f.g"], w["ln_f.b"], cfg.ln_eps) @ w["out.W"].T + w["out.b"]
    if cfg.head == "mean" and cfg.pool_window > 1:
        W = cfg.pool_window
        y = np.stack([y[max(0, t - W + 1): t + 1].mean(0) for t in range(T)])
    return y
