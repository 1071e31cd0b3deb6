"""Test programs built with numpy alone (no torch): weights in `ESSMModel.export_weights()` layout,
compiled by `compile_weights`, so the engine and program tests run on a runtime-only install and can
be held to `reference.model_ref` (the plain numpy forward) on the same weights."""
from __future__ import annotations

import numpy as np

from essm_stream.compile import compile_weights
from essm_stream.config import ESSMConfig
from essm_stream.program import StreamProgram


def export_weights(cfg: ESSMConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float64 weights named as ESSMModel.export_weights(): orthonormal filters and decaying σ
    (the engine's exactness does not depend on them being the Hankel ones)."""
    rng = np.random.default_rng(seed)
    d, L, Kb, dg, dh = cfg.d_model, cfg.seq_len, cfg.k_max, cfg.d_gate, cfg.mlp_ratio * cfg.d_model

    def lin(n_out, n_in):
        return rng.standard_normal((n_out, n_in)) / np.sqrt(n_in), 0.1 * rng.standard_normal(n_out)

    w = {}
    w["inp.W"], w["inp.b"] = lin(d, cfg.d_in)
    phi = np.linalg.qr(rng.standard_normal((L, Kb)))[0]
    sigma = np.logspace(0, -8, Kb)
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        w[p + "ln1.g"], w[p + "ln1.b"] = 1 + 0.1 * rng.standard_normal(d), 0.1 * rng.standard_normal(d)
        w[p + "essm.phi"], w[p + "essm.sigma"] = phi, sigma
        w[p + "essm.M"] = rng.standard_normal((Kb, d, d)) / np.sqrt(d)
        w[p + "essm.D"] = rng.standard_normal((d, d)) / np.sqrt(d)
        if cfg.gated:
            w[p + "essm.W1"], w[p + "essm.b1"] = lin(dg, d)
            w[p + "essm.W2"], w[p + "essm.b2"] = lin(Kb, dg)
        if cfg.mlp:
            w[p + "ln2.g"], w[p + "ln2.b"] = 1 + 0.1 * rng.standard_normal(d), 0.1 * rng.standard_normal(d)
            w[p + "fc1.W"], w[p + "fc1.b"] = lin(dh, d)
            w[p + "fc2.W"], w[p + "fc2.b"] = lin(d, dh)
    w["ln_f.g"], w["ln_f.b"] = 1 + 0.1 * rng.standard_normal(d), 0.1 * rng.standard_normal(d)
    w["out.W"], w["out.b"] = lin(cfg.d_out, d)
    return w


def numpy_program(cfg: ESSMConfig, seed: int = 0) -> tuple[StreamProgram, dict[str, np.ndarray]]:
    """(program, the export-layout weights it was compiled from)."""
    w = export_weights(cfg, seed)
    return StreamProgram(cfg, compile_weights(w, cfg), provenance={"source_checkpoint": None}), w


def reference_out(w, cfg, X, K) -> np.ndarray:
    """reference.model_ref per stream: X (T, B, d_in), K int / (T,) / (T, B) -> (T, B, d_out) float64."""
    from essm_stream.reference import model_ref
    T, B, _ = X.shape
    K = np.asarray(K)
    Kb = np.broadcast_to(K if K.ndim == 2 else (K[:, None] if K.ndim == 1 else K), (T, B))
    return np.stack([model_ref(np.asarray(X[:, b], np.float64), w, cfg, Kb[:, b]) for b in range(B)], axis=1)
