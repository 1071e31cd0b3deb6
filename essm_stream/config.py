"""Flat, validated model configuration, shared by the torch model, checkpoints and programs.

Torch-free on purpose: a compiled program carries this config in its metadata and the runtime
must read it without importing torch.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError

VARIANTS = ("essm", "base", "gate_only", "dropout_only")
HEADS = ("step", "mean")

# Which of the paper's two mechanisms (§6.1) each ablation variant switches on.
VARIANT_GATE = {"essm": True, "base": False, "gate_only": True, "dropout_only": False}
VARIANT_BUDGET_DROPOUT = {"essm": True, "base": False, "gate_only": False, "dropout_only": True}

# Upper bounds of every size (docs/RELIABILITY.md): far above any model this project trains (the
# paper's largest is d_model 256, L 1024), low enough that a hostile config cannot ask for TiB.
# The engine also checks its total memory before allocating (StreamEngine(max_bytes=...)).
LIMITS = {"d_in": 1 << 16, "d_out": 1 << 16, "d_model": 1 << 13, "n_layers": 256, "seq_len": 1 << 16,
          "k_max": 1 << 12, "d_gate": 1 << 13, "mlp_ratio": 64, "pool_window": 1 << 16}
EPS_MAX = 0.1   # ln_eps and gate_eps are in (0, EPS_MAX]: larger ones flatten LayerNorm / the gate


@dataclass(frozen=True)
class ESSMConfig:
    d_in: int                  # input features per frame
    d_out: int                 # outputs per frame (classes or regression targets)
    d_model: int = 64          # width of the residual stream
    n_layers: int = 2          # pre-norm residual blocks
    seq_len: int = 128         # L: length of the Hankel filters (the causal window)
    k_max: int = 32            # K̄: full spectral capacity
    d_gate: int = 32           # hidden width of the gate MLP (Eq. 8c)
    variant: str = "essm"      # essm | base | gate_only | dropout_only (paper §6.1)
    mlp: bool = True           # MLP sub-layer in every block
    mlp_ratio: int = 2         # MLP hidden width = mlp_ratio * d_model
    head: str = "step"         # step: per-step output; mean: mean over a trailing window
    pool_window: int = 1       # W for head="mean" (causal: never pools over the future)
    dropout: float = 0.0       # ordinary dropout on sub-layer outputs while training
    ln_eps: float = 1e-5       # LayerNorm epsilon
    gate_eps: float = 1e-6     # ε of the RMS rescaling (Eq. 8b)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            want = {"int": int, "float": float, "str": str, "bool": bool}[f.type]
            ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                try:
                    object.__setattr__(self, f.name, float(v))
                except OverflowError:
                    raise ConfigError(f"ESSMConfig.{f.name} = {str(v)[:24]}... is out of range") from None
                ok = True
            if not ok:
                raise ConfigError(f"ESSMConfig.{f.name} must be {f.type}, got {type(v).__name__} {v!r}")
        for name, hi in LIMITS.items():
            if not 1 <= getattr(self, name) <= hi:
                raise ConfigError(f"ESSMConfig.{name} must be in [1, {hi}], got {getattr(self, name)}")
        for name in ("dropout", "ln_eps", "gate_eps"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"ESSMConfig.{name} must be finite, got {getattr(self, name)}")
        if self.k_max > self.seq_len:
            raise ConfigError(f"ESSMConfig.k_max={self.k_max} cannot exceed seq_len={self.seq_len}: "
                              "Z (L x L) has only L eigenvectors")
        if self.variant not in VARIANTS:
            raise ConfigError(f"ESSMConfig.variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.head not in HEADS:
            raise ConfigError(f"ESSMConfig.head must be one of {HEADS}, got {self.head!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ESSMConfig.dropout must be in [0, 1), got {self.dropout}")
        for name in ("ln_eps", "gate_eps"):
            if not 0.0 < getattr(self, name) <= EPS_MAX:
                raise ConfigError(f"ESSMConfig.{name} must be in (0, {EPS_MAX}], got {getattr(self, name)}")

    @property
    def gated(self) -> bool:
        return VARIANT_GATE[self.variant]

    @property
    def budget_dropout(self) -> bool:
        return VARIANT_BUDGET_DROPOUT[self.variant]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ESSMConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"ESSMConfig.from_dict needs a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(map(str, set(d) - known))
        if unknown:
            raise ConfigError(f"unknown ESSMConfig keys {unknown}; known keys are {sorted(known)}")
        try:
            return cls(**d)
        except TypeError as e:  # a required key is missing
            raise ConfigError(f"ESSMConfig: {e}") from None
