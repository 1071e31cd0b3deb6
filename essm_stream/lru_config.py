"""Flat, validated configuration of the LRU peer model (CompreSSM's seed), torch-free like ESSMConfig.

An LRU has no runtime budget: its compute is fixed by its state sizes. To share the training loop,
checkpoints and sweeps with ES-SSM it presents a one-point budget range (k_max = 1, no budget
dropout), so a caller that passes K=1 or None gets the model's one and only output.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from .config import HEADS
from .errors import ConfigError

MODEL_KIND = "lru"


@dataclass(frozen=True)
class LRUConfig:
    d_in: int                  # input features per frame
    d_out: int                 # outputs per frame
    d_model: int = 32          # width of the residual stream
    n_layers: int = 2          # pre-norm residual blocks
    state: int = 64            # N: complex state size of every layer at construction
    states: tuple = ()         # per-layer state sizes after in-training reduction; () = all `state`
    seq_len: int = 64          # training sequence length (the LRU itself has no window)
    mlp: bool = True
    mlp_ratio: int = 2
    head: str = "step"
    pool_window: int = 1
    dropout: float = 0.0
    ln_eps: float = 1e-5
    r_min: float = 0.5         # |λ| initialised uniformly on the ring r_min <= |λ| <= r_max (LRU §3.3)
    r_max: float = 0.99
    max_phase: float = math.pi  # arg λ initialised uniformly on [0, max_phase]

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            want = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple}[f.type]
            if want is tuple and isinstance(v, list):
                v = tuple(v)
                object.__setattr__(self, f.name, v)
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
                object.__setattr__(self, f.name, v)
            if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                raise ConfigError(f"LRUConfig.{f.name} must be {f.type}, got {type(v).__name__} {v!r}")
        for name in ("d_in", "d_out", "d_model", "n_layers", "state", "seq_len", "mlp_ratio", "pool_window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LRUConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.states:
            if len(self.states) != self.n_layers:
                raise ConfigError(f"LRUConfig.states has {len(self.states)} entries for {self.n_layers} layers")
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in self.states):
                raise ConfigError(f"LRUConfig.states must be ints >= 1, got {self.states!r}")
        if self.head not in HEADS:
            raise ConfigError(f"LRUConfig.head must be one of {HEADS}, got {self.head!r}")
        if not 0.0 <= self.r_min < self.r_max < 1.0:
            raise ConfigError(f"LRUConfig needs 0 <= r_min < r_max < 1, got r_min={self.r_min}, r_max={self.r_max}")
        if not 0.0 < self.max_phase <= 2 * math.pi:
            raise ConfigError(f"LRUConfig.max_phase must be in (0, 2π], got {self.max_phase}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LRUConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.ln_eps <= 0:
            raise ConfigError("LRUConfig.ln_eps must be > 0")

    # The budget interface the shared training loop and sweeps read (see the module docstring).
    kind = MODEL_KIND
    k_max = 1
    budget_dropout = False
    gated = False
    variant = MODEL_KIND

    def layer_states(self) -> tuple[int, ...]:
        """State size N of every layer (after any reduction)."""
        return tuple(self.states) if self.states else (self.state,) * self.n_layers

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["states"] = list(self.states)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LRUConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"LRUConfig.from_dict needs a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown LRUConfig keys {unknown}; known keys are {sorted(known)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(f"LRUConfig: {e}") from None


def macs_per_step_lru(cfg: LRUConfig) -> int:
    """Real multiply-accumulates of one streaming step: per layer the complex state update
    λ x + (γB) u (N complex products + N·d complex-by-real = 4N + 2N·d), the readout Re(C x)
    (2 N·d) and D u (d), the MLP; plus input and output maps. Same counting as ES-SSM's
    `macs_per_step` (LayerNorms and activations not counted)."""
    d = cfg.d_model
    total = cfg.d_in * d + d * cfg.d_out
    for N in cfg.layer_states():
        total += 4 * N + 2 * N * d + 2 * N * d + d
        if cfg.mlp:
            total += 2 * cfg.mlp_ratio * d * d
    return total
