"""Plain numpy float64 reference of the LRU model: the recurrence as a loop over time, for clarity.

Reads weights only in the layout of `LRUModel.export_weights()`; torch-free. The torch parallel
(chunked Toeplitz) path, the torch step path and the streaming engine are held to it in tests.
"""
from __future__ import annotations

import numpy as np

from .lru_config import LRUConfig
from .reference import residual_model_ref


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
    return residual_model_ref(x, w, cfg, "lru", lambda u, lw: lru_layer_ref(u, lw)[0])
