"""compile_model: a trained ESSMModel -> a frozen StreamProgram (the only module here that needs torch
through the model; it reads weights ONLY through `model.export_weights()`)."""
from __future__ import annotations

import datetime as _dt
import hashlib
import os

import numpy as np

from .config import ESSMConfig
from .errors import ProgramError
from .program import StreamProgram, expected_shapes

__all__ = ["compile_model", "compile_weights"]


def compile_weights(weights: dict[str, np.ndarray], cfg: ESSMConfig) -> dict[str, np.ndarray]:
    """Flat export (ESSMModel.export_weights layout) -> program arrays laid out for the step.

    Precomputes what every step needs: σ_k^{1/4} folded into M_k and D prepended, Mcat[l, i, :d] = D,
    Mcat[l, i, d + k d + j] = σ_k^{1/4} M[k, i, j] (so the active prefix of each row is contiguous);
    the filters reversed, phir[l, k, τ'] = φ_k(L-1-τ') (a plain dot product with the oldest-first window).
    """
    d, nl, L, Kb = cfg.d_model, cfg.n_layers, cfg.seq_len, cfg.k_max
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}

    def get(name, shape):
        if name not in w:
            raise ProgramError(f"export_weights() has no {name!r} (config variant={cfg.variant!r}, mlp={cfg.mlp})")
        if w[name].shape != tuple(shape):
            raise ProgramError(f"export_weights()[{name!r}] has shape {w[name].shape}, expected {tuple(shape)}")
        return w[name]

    out = {"inp.W": get("inp.W", (d, cfg.d_in)), "inp.b": get("inp.b", (d,)),
           "ln_f.g": get("ln_f.g", (d,)), "ln_f.b": get("ln_f.b", (d,)),
           "out.W": get("out.W", (cfg.d_out, d)), "out.b": get("out.b", (cfg.d_out,))}
    stack = lambda name, shape: np.stack([get(f"blocks.{i}.{name}", shape) for i in range(nl)])  # noqa: E731
    out["ln1.g"], out["ln1.b"] = stack("ln1.g", (d,)), stack("ln1.b", (d,))
    phi = stack("essm.phi", (L, Kb))                                     # (nl, L, K̄)
    sigma = stack("essm.sigma", (Kb,))                                   # (nl, K̄)
    M = stack("essm.M", (Kb, d, d))                                      # (nl, K̄, d, d)
    D = stack("essm.D", (d, d))                                          # (nl, d, d)
    if np.any(sigma <= 0):
        raise ProgramError("sigma must be > 0: the Hankel eigenvalues are positive")
    out["sigma"] = sigma
    out["phir"] = np.ascontiguousarray(phi[:, ::-1, :].transpose(0, 2, 1))        # (nl, K̄, L)
    Ms = M * (sigma ** 0.25)[:, :, None, None]                                     # σ^{1/4} M_k
    out["Mcat"] = np.ascontiguousarray(
        np.concatenate([D[:, None], Ms], axis=1).transpose(0, 2, 1, 3).reshape(nl, d, (Kb + 1) * d))
    has_gate = "blocks.0.essm.W1" in w
    if has_gate != cfg.gated:
        raise ProgramError(f"config variant {cfg.variant!r} {'has' if cfg.gated else 'has no'} gate, "
                           f"but the exported weights {'have' if has_gate else 'have no'} W1")
    if cfg.gated:
        dg = cfg.d_gate
        out["W1"], out["b1"] = stack("essm.W1", (dg, d)), stack("essm.b1", (dg,))
        out["W2"], out["b2"] = stack("essm.W2", (Kb, dg)), stack("essm.b2", (Kb,))
    if cfg.mlp:
        dh = cfg.mlp_ratio * d
        out["ln2.g"], out["ln2.b"] = stack("ln2.g", (d,)), stack("ln2.b", (d,))
        out["fc1.W"], out["fc1.b"] = stack("fc1.W", (dh, d)), stack("fc1.b", (dh,))
        out["fc2.W"], out["fc2.b"] = stack("fc2.W", (d, dh)), stack("fc2.b", (d,))
    want = expected_shapes(cfg)
    assert set(out) == set(want), (sorted(set(out) ^ set(want)))
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise ProgramError(f"weight {k!r} holds NaN or Inf: the model cannot be compiled")
    return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in out.items()}


def compile_model(model, source_checkpoint: str | os.PathLike | None = None, frontend: dict | None = None,
                  budget_profile: dict | None = None, spectral: str = "exact", tol: float = 1e-3,
                  lds_buffered: bool = True, lds_weighted: bool = False, lds_n_max: int = 64,
                  mix_weights: str = "fp32") -> StreamProgram:
    """ESSMModel -> StreamProgram. Reads the weights only through `model.export_weights()`.

    spectral="exact": the ring-buffer FIR (equals the model). spectral="lds": the filter bank as a
    ladder of N ≪ L poles fitted to max filter error <= tol (essm_stream/lds.py; N per layer and the
    measured per-filter error are recorded in the program); lds_buffered=False is the no-buffer
    variant for MCU-class targets (~1e-2), lds_weighted weights filter k by ||M_k||.
    mix_weights="fp16" (opt-in): the mixing weights Mcat and the MLP weights fc1.W, fc2.W rounded to
    float16 values, which float32 engines read from half-width copies (StreamProgram.with_mix_weights;
    docs/PERFORMANCE.md)."""
    if spectral not in ("exact", "lds"):
        raise ProgramError(f"spectral must be 'exact' or 'lds', got {spectral!r}")
    cfg = getattr(model, "cfg", None)
    from .lru_config import LRUConfig
    if not isinstance(cfg, (ESSMConfig, LRUConfig)) or not callable(getattr(model, "export_weights", None)):
        raise ProgramError(f"compile_model needs an ESSMModel (with .cfg and .export_weights()), got {type(model).__name__}")
    from . import __version__
    sha = None
    if source_checkpoint is not None:
        source_checkpoint = os.fspath(source_checkpoint)
        if os.path.isfile(source_checkpoint):
            h = hashlib.sha256()
            with open(source_checkpoint, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            sha = h.hexdigest()
    prov = {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__, "source_checkpoint": source_checkpoint, "source_sha256": sha}
    if isinstance(cfg, LRUConfig):   # layer kind lru (CompreSSM's peer): λ, γB precomputed in float64
        if spectral != "exact":
            raise ProgramError("spectral='lds' applies to ES-SSM models; an LRU model has no filter bank")
        from .kernels_lru import compile_lru_weights
        arrays = compile_lru_weights(model.export_weights(), cfg)
    else:
        arrays = compile_weights(model.export_weights(), cfg)
    prog = StreamProgram(cfg, arrays, provenance=prov, frontend=frontend, budget_profile=budget_profile)
    if spectral == "lds":
        from .lds import lds_program
        prog = lds_program(prog, tol=tol, buffered=lds_buffered, weighted=lds_weighted, n_max=lds_n_max)
    return prog.with_mix_weights(mix_weights)
