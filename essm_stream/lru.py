"""The Linear Recurrent Unit (Orvieto et al. 2023) in the ES-SSM block, the peer CompreSSM compresses.

Layer (diagonal complex LTI system, one per block):
    λ = exp(−exp(ν) + i·exp(θ))          stable for any real ν, θ (|λ| = exp(−exp ν) < 1)
    γ = sqrt(1 − |λ|²)                    input normalisation (computed, not trained)
    x(t) = λ ⊙ x(t−1) + γ ⊙ (B u(t))      B (N, d) complex, x (N,) complex, x(0) = 0 before the start
    y(t) = Re(C x(t)) + D ⊙ u(t)          C (d, N) complex, D (d,) real

Training runs an exact parallel form: the sequence is cut into chunks, inside a chunk the state is
one matmul with the Toeplitz matrix λ^(t−s) (s ≤ t), and chunks are chained through their last
state. Streaming (`step`) is the recurrence. The block around it is ES-SSM's pre-norm residual
block (LayerNorm, mixing, MLP), so the two models differ only in the sequence mixer.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import BudgetError, ConfigError, ShapeError
from .lru_config import LRUConfig
from .model import budget_mask, export_block_weights, trailing_mean

__all__ = ["LRUConfig", "LRULayer", "LRUBlock", "LRUModel", "lru_scan"]

SCAN_CHUNK = 128   # Toeplitz chunk: O(T·chunk·N) work per sequence, exact for any T


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def lru_scan(v: torch.Tensor, log_lam: torch.Tensor, x0: torch.Tensor | None = None,
             chunk: int = SCAN_CHUNK) -> torch.Tensor:
    """x(t) = λ x(t−1) + v(t) for every t, exactly, in parallel.

    v (B, T, N) complex, log_lam (N,) complex (λ = exp(log_lam)), x0 (B, N) state before t = 0
    -> x (B, T, N). Inside a chunk of c steps: x = Toep(λ) v + λ^(j+1) x_prev with
    Toep[j, s] = λ^(j−s) for s ≤ j; λ^k is exp(k·log λ), never a repeated product.
    """
    B, T, N = v.shape
    c = min(T, chunk)
    j = torch.arange(c, device=v.device)
    lag = j[:, None] - j[None, :]                                                  # (c, c) j − s
    causal = (lag >= 0).to(log_lam.real.dtype)
    toep = torch.exp(lag.clamp(min=0)[..., None].to(log_lam.real.dtype) * log_lam) * causal[..., None]  # (c, c, N)
    carry = torch.exp((j + 1)[:, None].to(log_lam.real.dtype) * log_lam)           # (c, N) λ^(j+1)
    outs, prev = [], x0
    for t0 in range(0, T, c):
        vc = v[:, t0:t0 + c]
        n = vc.shape[1]
        xc = torch.einsum("tsn,bsn->btn", toep[:n, :n], vc)
        if prev is not None:
            xc = xc + carry[:n][None] * prev[:, None, :]
        outs.append(xc)
        prev = xc[:, -1]
    return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]


class LRULayer(nn.Module):
    """One LRU: u (B, T, d) -> y (B, T, d). Parameters: nu, theta (N,), B_re, B_im (N, d),
    C_re, C_im (d, N), D (d,)."""

    def __init__(self, d_model: int, state: int, r_min: float = 0.5, r_max: float = 0.99,
                 max_phase: float = math.pi):
        super().__init__()
        if state < 1 or d_model < 1:
            raise ConfigError(f"LRULayer needs d_model >= 1 and state >= 1, got {d_model}, {state}")
        self.d, self.N = d_model, state
        # Eigenvalues uniform on the ring r_min <= |λ| <= r_max, phase uniform on [0, max_phase] (LRU §3.3).
        u1, u2 = torch.rand(state), torch.rand(state)
        self.nu = nn.Parameter(torch.log(-0.5 * torch.log(u1 * (r_max ** 2 - r_min ** 2) + r_min ** 2)))
        self.theta = nn.Parameter(torch.log(max_phase * u2.clamp(min=1e-4)))
        # Glorot-like complex init: unit-variance outputs at init once γ normalises the input.
        self.B_re = nn.Parameter(torch.randn(state, d_model) / math.sqrt(2 * d_model))
        self.B_im = nn.Parameter(torch.randn(state, d_model) / math.sqrt(2 * d_model))
        self.C_re = nn.Parameter(torch.randn(d_model, state) / math.sqrt(state))
        self.C_im = nn.Parameter(torch.randn(d_model, state) / math.sqrt(state))
        self.D = nn.Parameter(torch.randn(d_model))

    # ---- the LTI system (λ, B̃ = γB, C) the layer realises
    def log_lambda(self) -> torch.Tensor:
        """log λ = −exp(ν) + i exp(θ), (N,) complex."""
        return torch.complex(-torch.exp(self.nu), torch.exp(self.theta))

    def gamma(self) -> torch.Tensor:
        """γ = sqrt(1 − |λ|²) = sqrt(−expm1(−2 exp ν)): no cancellation when |λ| → 1."""
        return torch.sqrt(-torch.expm1(-2.0 * torch.exp(self.nu)))

    def B_tilde(self) -> torch.Tensor:
        return torch.complex(self.B_re, self.B_im) * self.gamma()[:, None]

    def C_complex(self) -> torch.Tensor:
        return torch.complex(self.C_re, self.C_im)

    def forward(self, u: torch.Tensor, x0: torch.Tensor | None = None, return_state: bool = False):
        """u (B, T, d) -> y (B, T, d) (and the last state (B, N) if return_state); x0 (B, N) or None."""
        if u.dim() != 3 or u.shape[-1] != self.d:
            raise ShapeError(f"LRULayer expects u of shape (B, T, {self.d}), got {tuple(u.shape)}")
        # Complex math in float32 at least, outside autocast (half-precision complex is not supported).
        work = torch.promote_types(u.dtype, torch.float32)
        with torch.autocast(device_type=u.device.type, enabled=False):
            uw = u.to(work)
            cdt = _complex_of(work)
            v = torch.matmul(uw.to(cdt), self.B_tilde().to(cdt).t())                  # (B, T, N)
            x = lru_scan(v, self.log_lambda().to(cdt), None if x0 is None else x0.to(cdt))
            y = torch.matmul(x, self.C_complex().to(cdt).t()).real + uw * self.D.to(work)
        y = y.to(u.dtype)
        return (y, x[:, -1]) if return_state else y

    def step(self, u_t: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One streaming step: u_t (B, d), x (B, N) complex -> (y_t (B, d), new x)."""
        cdt = x.dtype
        x = torch.exp(self.log_lambda().to(cdt)) * x + u_t.to(cdt) @ self.B_tilde().to(cdt).t()
        y = (x @ self.C_complex().to(cdt).t()).real.to(u_t.dtype) + u_t * self.D
        return y, x

    @torch.no_grad()
    def system(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(λ (N,), B̃ = γB (N, d), C (d, N)) as complex128 numpy: what CompreSSM reduces."""
        f = lambda t: t.detach().cpu().to(torch.float64)  # noqa: E731
        nu, th = f(self.nu).numpy(), f(self.theta).numpy()
        lam = np.exp(-np.exp(nu) + 1j * np.exp(th))
        gam = np.sqrt(-np.expm1(-2.0 * np.exp(nu)))
        Bt = (f(self.B_re).numpy() + 1j * f(self.B_im).numpy()) * gam[:, None]
        C = f(self.C_re).numpy() + 1j * f(self.C_im).numpy()
        return lam, Bt, C

    @torch.no_grad()
    def set_system(self, lam: np.ndarray, Bt: np.ndarray, C: np.ndarray) -> dict:
        """Replace the layer by the diagonal system (λ, B̃, C) (e.g. a balanced truncation).

        Needs 0 < |λ| < 1 and arg λ in (0, π] (see compressm.rediagonalise, which flips conjugates).
        Returns {old parameter: new parameter} so an optimizer can follow. D is kept.
        """
        lam = np.asarray(lam, np.complex128)
        r = lam.shape[0]
        if Bt.shape != (r, self.d) or C.shape != (self.d, r):
            raise ShapeError(f"set_system: need B̃ ({r}, {self.d}) and C ({self.d}, {r}), got {Bt.shape}, {C.shape}")
        mag, ang = np.abs(lam), np.angle(lam)
        if np.any(mag >= 1) or np.any(mag <= 0) or np.any(ang < 0):
            raise ConfigError("set_system needs 0 < |λ| < 1 and arg λ >= 0 for every mode")
        nu = np.log(-np.log(mag))
        theta = np.log(np.maximum(ang, 1e-12))         # a real mode keeps a 1e-12 rad phase
        gam = np.sqrt(-np.expm1(-2.0 * np.exp(nu)))
        B = Bt / gam[:, None]
        like = self.nu
        mk = lambda a: nn.Parameter(torch.as_tensor(np.ascontiguousarray(a), dtype=like.dtype, device=like.device))  # noqa: E731
        new = {"nu": mk(nu), "theta": mk(theta), "B_re": mk(B.real), "B_im": mk(B.imag),
               "C_re": mk(C.real), "C_im": mk(C.imag)}
        old = {n: getattr(self, n) for n in new}
        for n, p in new.items():
            setattr(self, n, p)                         # same registration slot: parameter order is kept
        self.N = r
        return {old[n]: new[n] for n in new}

    @torch.no_grad()
    def export_weights(self) -> dict[str, np.ndarray]:
        """Float64 numpy copies of the raw parameters (λ, γ derived by whoever reads them)."""
        names = ("nu", "theta", "B_re", "B_im", "C_re", "C_im", "D")
        return {n: getattr(self, n).detach().cpu().to(torch.float64).numpy().copy() for n in names}


class LRUBlock(nn.Module):
    """ES-SSM's pre-norm residual block with the LRU as mixer: x ← x + LRU(LN(x)); x ← x + MLP(LN(x))."""

    def __init__(self, cfg: LRUConfig, state: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.lru = LRULayer(cfg.d_model, state, cfg.r_min, cfg.r_max, cfg.max_phase)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.mlp:
            self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
            self.fc1 = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
            self.fc2 = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)
        self.has_mlp = cfg.mlp

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_mlp:
            x = x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="none")))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._mlp(x + self.drop(self.lru(self.ln1(x))))

    def step(self, x_t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, s = self.lru.step(self.ln1(x_t), s)
        return self._mlp(x_t + self.drop(y)), s


class LRUModel(nn.Module):
    """Input projection, n pre-norm LRU blocks, final LayerNorm and a causal head (ESSMModel's shape).

    model(x, K=None): x (B, T, d_in) -> (B, T, d_out). An LRU has no budget: K must be None or 1.
    """

    def __init__(self, cfg: LRUConfig):
        super().__init__()
        if not isinstance(cfg, LRUConfig):
            raise ConfigError(f"LRUModel needs an LRUConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.inp = nn.Linear(cfg.d_in, cfg.d_model)
        self.blocks = nn.ModuleList(LRUBlock(cfg, n) for n in cfg.layer_states())
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.out = nn.Linear(cfg.d_model, cfg.d_out)

    def _check_K(self, K, B: int, T: int, device) -> None:
        if K is None:
            return
        try:
            budget_mask(K, B, T, 1, device)
        except BudgetError as e:
            raise BudgetError(f"an LRU model has no runtime budget: K must be None or 1 ({e})") from None

    def forward(self, x: torch.Tensor, K=None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.cfg.d_in:
            raise ShapeError(f"LRUModel expects x of shape (B, T, {self.cfg.d_in}), got {tuple(x.shape)}")
        self._check_K(K, x.shape[0], x.shape[1], x.device)
        h = self.inp(x)
        for blk in self.blocks:
            h = blk(h)
        y = self.out(self.ln_f(h))
        if self.cfg.head == "mean" and self.cfg.pool_window > 1:
            y = trailing_mean(y, self.cfg.pool_window)
        return y

    def init_state(self, batch: int) -> list[torch.Tensor]:
        """Zero state of every layer, [(batch, N_i) complex]."""
        p = self.inp.weight
        return [torch.zeros(batch, blk.lru.N, dtype=_complex_of(p.dtype), device=p.device) for blk in self.blocks]

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One frame through the recurrence: x_t (B, d_in) -> y_t (B, d_out) (head="step" only)."""
        if self.cfg.head == "mean" and self.cfg.pool_window > 1:
            raise ConfigError("LRUModel.step supports head='step' only; the mean head needs a window buffer")
        h = self.inp(x_t)
        new = []
        for blk, s in zip(self.blocks, states):
            h, s = blk.step(h, s)
            new.append(s)
        return self.out(self.ln_f(h)), new

    def sync_config(self) -> None:
        """Record the layers' current state sizes in cfg (after an in-training reduction)."""
        self.cfg = dataclasses.replace(self.cfg, states=tuple(blk.lru.N for blk in self.blocks))

    def export_weights(self) -> dict[str, np.ndarray]:
        """Every weight as float64 numpy under a flat name, ESSMModel's names with `lru.` for the mixer."""
        return export_block_weights(self, "lru")
