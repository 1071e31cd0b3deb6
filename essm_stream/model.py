"""ES-SSM in PyTorch: the spectral layer (paper Eq. 7-8), pre-norm blocks and the model.

Shapes: B batch, T time steps, d width, L filter length, K̄ = k_max, K the runtime budget.
The budget K is an int, or a LongTensor (T,) / (B, T) giving a budget per step (per stream), so
that the parallel forward computes exactly what the streaming engine computes when K changes
mid-stream.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ESSMConfig, VARIANT_GATE, VARIANTS
from .errors import BudgetError, ConfigError, ShapeError, check_budget

__all__ = ["ESSMConfig", "ESSMLayer", "ESSMBlock", "ESSMModel", "causal_conv", "budget_mask"]


def causal_conv_fft(u: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """(Φ_k * u)(t) = Σ_{τ<L} φ_k(τ) u(t-τ), zero before the start, by FFT.

    u (B, T, d), phi (L, k) -> (B, T, k, d). The FFT size covers T + L - 1 (and at least 2L), so
    there is no wrap-around and for T > L it is the sliding-window FIR of the length-L filter.
    """
    B, T, d = u.shape
    L, k = phi.shape
    n = 1 << (max(2 * L, T + L - 1) - 1).bit_length()        # power of two >= max(2L, T+L-1)
    # FFT in float32 at least: half precision FFTs lose the small filters entirely.
    work = torch.promote_types(u.dtype, torch.float32)
    with torch.autocast(device_type=u.device.type, enabled=False):
        uf = torch.fft.rfft(u.to(work).transpose(1, 2), n=n)                 # (B, d, F), time last
        pf = torch.fft.rfft(phi.to(work).t(), n=n)                           # (k, F)
        y = torch.fft.irfft(uf[:, None] * pf[None, :, None], n=n)[..., :T]   # (B, k, d, T)
    return y.permute(0, 3, 1, 2)


def causal_conv_toeplitz(u: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """The same convolution as one matmul with the (banded) Toeplitz matrices of the filters.

    O(k T^2 d) work but dense BLAS; for the short sequences of edge tasks it is several times
    faster than the FFT path (whose (B, F, k, d) complex intermediates are memory-bound).
    """
    B, T, d = u.shape
    L, k = phi.shape
    lag = torch.arange(T, device=u.device)[:, None] - torch.arange(T, device=u.device)[None, :]  # t - s
    inside = (lag >= 0) & (lag < L)
    toep = phi.to(u.dtype)[lag.clamp(0, L - 1)] * inside[..., None].to(u.dtype)                # (T, T, k)
    toep = toep.permute(2, 0, 1).reshape(k * T, T)                                             # [(k, t), s]
    return torch.matmul(toep, u).view(B, k, T, d).permute(0, 2, 1, 3)                          # (B, T, k, d)


TOEPLITZ_MAX_T = 256  # above this the FFT's O(T log T) wins over the Toeplitz matmul's O(T^2)


def causal_conv(u: torch.Tensor, phi: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Causal convolution of u (B, T, d) with every filter in phi (L, k) -> (B, T, k, d)."""
    if method == "auto":
        method = "toeplitz" if u.shape[1] <= TOEPLITZ_MAX_T else "fft"
    if method == "fft":
        return causal_conv_fft(u, phi)
    if method == "toeplitz":
        return causal_conv_toeplitz(u, phi)
    raise ConfigError(f"conv method must be auto, fft or toeplitz, got {method!r}")


def budget_mask(K, B: int, T: int, k_max: int, device) -> tuple[torch.Tensor, int]:
    """Budget as a (B, T) LongTensor plus the largest K used, after validation."""
    if isinstance(K, torch.Tensor):
        if K.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.bool):
            raise BudgetError(f"per-step budget K must be an integer tensor, got dtype {K.dtype}")
        if K.dim() == 1:
            if K.shape[0] != T:
                raise BudgetError(f"per-step budget K of shape {tuple(K.shape)} does not match T={T}")
            Kt = K.to(device=device, dtype=torch.long)[None, :].expand(B, T)
        elif K.dim() == 2:
            if tuple(K.shape) != (B, T):
                raise BudgetError(f"per-step budget K of shape {tuple(K.shape)} does not match (B, T)=({B}, {T})")
            Kt = K.to(device=device, dtype=torch.long)
        else:
            raise BudgetError(f"budget K must be an int or a tensor of shape (T,) or (B, T), got shape {tuple(K.shape)}")
        lo, hi = int(Kt.min()), int(Kt.max())
        if lo < 1 or hi > k_max:
            raise BudgetError(f"budget K must lie in [1, {k_max}], got values in [{lo}, {hi}]")
        return Kt, hi
    K = check_budget(K, k_max, "budget K (an int, or an integer tensor of shape (T,) or (B, T))")
    return torch.full((B, T), K, dtype=torch.long, device=device), K


class ESSMLayer(nn.Module):
    """y(t) = D u(t) + Σ_{k≤K} α_k(t) σ_k^{1/4} M_k (Φ_k * u)(t)   (Eq. 7)

    α = softmax over k ≤ K of s̃_k = s_k √K / (‖s_{1:K}‖ + ε), s = W2 GELU(W1 u + b1) + b2 (Eq. 8).
    Variants without the gate use the plain sum of Eq. 6 (α_k = 1 for k ≤ K).
    """

    def __init__(self, d_model: int, seq_len: int, k_max: int = 32, d_gate: int = 32,
                 variant: str = "essm", gate_eps: float = 1e-6, init_filters: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if k_max > seq_len:
            raise ConfigError(f"k_max={k_max} cannot exceed seq_len={seq_len}")
        self.d, self.L, self.k_max, self.d_gate = d_model, seq_len, k_max, d_gate
        self.variant, self.gated, self.eps = variant, VARIANT_GATE[variant], gate_eps
        self.conv_method = "auto"  # "fft" | "toeplitz": same result, different speed (tests pin each)
        if init_filters:
            from .hankel import spectral_filters
            sigma, phi = spectral_filters(seq_len, k_max)
        else:  # filled by load_state_dict: a loaded model never recomputes its filters
            sigma, phi = np.ones(k_max), np.zeros((seq_len, k_max))
        # The fixed Hankel basis stays float64 whatever dtype the module is cast to (see _apply).
        self.register_buffer("phi", torch.from_numpy(np.array(phi, dtype=np.float64)))      # (L, K̄)
        self.register_buffer("sigma", torch.from_numpy(np.array(sigma, dtype=np.float64)))  # (K̄,)
        # M_k ~ 1/sqrt(d) per channel; D near identity-scale keeps the residual stream tame at init.
        self.M = nn.Parameter(torch.randn(k_max, d_model, d_model) / math.sqrt(d_model))
        self.D = nn.Parameter(torch.randn(d_model, d_model) / math.sqrt(d_model))
        if self.gated:
            self.W1 = nn.Parameter(torch.randn(d_gate, d_model) / math.sqrt(d_model))
            self.b1 = nn.Parameter(torch.zeros(d_gate))
            self.W2 = nn.Parameter(torch.randn(k_max, d_gate) / math.sqrt(d_gate))
            self.b2 = nn.Parameter(torch.zeros(k_max))

    def _apply(self, fn, recurse=True):
        # .float()/.half() would round the filters; keep the float64 originals, only follow the device.
        keep = {n: self._buffers[n] for n in ("phi", "sigma")}
        out = super()._apply(fn, recurse)
        for n, b in keep.items():
            self._buffers[n] = b.to(device=self._buffers[n].device)
        return out

    def gate_logits(self, u: torch.Tensor) -> torch.Tensor:
        """s(t) = W2 GELU(W1 u(t) + b1) + b2 (Eq. 8c); u (B, T, d) -> (B, T, K̄)."""
        return F.linear(F.gelu(F.linear(u, self.W1, self.b1), approximate="none"), self.W2, self.b2)

    def mixture_weights(self, u: torch.Tensor, Kt: torch.Tensor, k_used: int) -> torch.Tensor:
        """α (B, T, k_used): masked RMS-rescaled softmax (Eq. 8a-b), exactly 0 for k > K(t)."""
        B, T, _ = u.shape
        active = torch.arange(k_used, device=u.device)[None, None, :] < Kt[:, :, None]   # (B, T, k)
        if not self.gated:
            return active.to(u.dtype)
        s = self.gate_logits(u)[..., :k_used]
        zero = torch.zeros((), dtype=s.dtype, device=s.device)
        norm = torch.sqrt(torch.where(active, s * s, zero).sum(-1, keepdim=True))
        s_tilde = s * torch.sqrt(Kt[:, :, None].to(s.dtype)) / (norm + self.eps)
        s_tilde = torch.where(active, s_tilde, torch.full((), -torch.inf, dtype=s.dtype, device=s.device))
        return torch.where(active, torch.softmax(s_tilde, dim=-1), zero)

    def forward(self, u: torch.Tensor, K=None) -> torch.Tensor:
        """u (B, T, d) -> (B, T, d) at budget K (int, (T,) or (B, T) LongTensor; None = K̄)."""
        if u.dim() != 3 or u.shape[-1] != self.d:
            raise ShapeError(f"ESSMLayer expects u of shape (B, T, {self.d}), got {tuple(u.shape)}")
        B, T, d = u.shape
        Kt, k_used = budget_mask(self.k_max if K is None else K, B, T, self.k_max, u.device)
        return self.forward_budget(u, Kt, k_used)

    def forward_budget(self, u: torch.Tensor, Kt: torch.Tensor, k_used: int) -> torch.Tensor:
        """forward() after validation: Kt (B, T) budgets, k_used = their maximum (the model
        validates once and calls this per layer, so no per-layer checks or device syncs)."""
        B, T, d = u.shape
        alpha = self.mixture_weights(u, Kt, k_used)                                 # (B, T, k)
        coef = alpha * self.sigma[:k_used].to(u.dtype) ** 0.25                     # (B, T, k)
        # Channels above the largest K in use are neither convolved nor mixed.
        U = causal_conv(u, self.phi[:, :k_used], self.conv_method).to(u.dtype)     # (B, T, k, d)
        V = (coef.unsqueeze(-1) * U).reshape(B, T, k_used * d)                     # (B, T, k*d)
        M = self.M[:k_used].permute(0, 2, 1).reshape(k_used * d, d)                # [k*d+j, i] = M[k, i, j]
        return F.linear(u, self.D) + V @ M

    @torch.no_grad()
    def export_weights(self) -> dict[str, np.ndarray]:
        """Float64 numpy copies, σ^{1/4} not folded in; the compiler and checks read weights only here."""
        out = {"phi": self.phi, "sigma": self.sigma, "M": self.M, "D": self.D}
        if self.gated:
            out.update(W1=self.W1, b1=self.b1, W2=self.W2, b2=self.b2)
        return {k: v.detach().cpu().to(torch.float64).numpy().copy() for k, v in out.items()}


class ESSMBlock(nn.Module):
    """Pre-norm residual block: x ← x + ESSM(LN(x)); x ← x + MLP(LN(x)) (MLP optional)."""

    def __init__(self, cfg: ESSMConfig, init_filters: bool = True):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.essm = ESSMLayer(cfg.d_model, cfg.seq_len, cfg.k_max, cfg.d_gate, cfg.variant,
                              cfg.gate_eps, init_filters=init_filters)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.mlp:
            self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
            self.fc1 = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
            self.fc2 = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)
        self.has_mlp = cfg.mlp

    def forward(self, x: torch.Tensor, Kt: torch.Tensor, k_used: int) -> torch.Tensor:
        x = x + self.drop(self.essm.forward_budget(self.ln1(x), Kt, k_used))
        if self.has_mlp:
            x = x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="none")))
        return x


def trailing_mean(y: torch.Tensor, W: int) -> torch.Tensor:
    """Causal mean over the last min(t, W) steps (1-based t); y (B, T, c) -> (B, T, c)."""
    c = torch.cumsum(y, dim=1)
    shifted = F.pad(c, (0, 0, W, 0))[:, : y.shape[1]]          # c(t - W), zero before the start
    n = torch.clamp(torch.arange(1, y.shape[1] + 1, device=y.device), max=W).to(y.dtype)
    return (c - shifted) / n[None, :, None]


class ESSMModel(nn.Module):
    """Input projection, n pre-norm ES-SSM blocks, final LayerNorm and a causal head.

    model(x, K) with x (B, T, d_in) -> (B, T, d_out). head="mean" averages the per-step outputs
    over a trailing window of pool_window steps (never over the future), so that a classifier read
    at the last step is what a stream reports at that step.
    """

    def __init__(self, cfg: ESSMConfig, init_filters: bool = True):
        super().__init__()
        if not isinstance(cfg, ESSMConfig):
            raise ConfigError(f"ESSMModel needs an ESSMConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.inp = nn.Linear(cfg.d_in, cfg.d_model)
        self.blocks = nn.ModuleList(ESSMBlock(cfg, init_filters) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.out = nn.Linear(cfg.d_model, cfg.d_out)

    def forward(self, x: torch.Tensor, K=None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.cfg.d_in:
            raise ShapeError(f"ESSMModel expects x of shape (B, T, {self.cfg.d_in}), got {tuple(x.shape)}")
        K = self.cfg.k_max if K is None else K
        Kt, k_used = budget_mask(K, x.shape[0], x.shape[1], self.cfg.k_max, x.device)  # fail before any work
        h = self.inp(x)
        for blk in self.blocks:
            h = blk(h, Kt, k_used)
        y = self.out(self.ln_f(h))
        if self.cfg.head == "mean" and self.cfg.pool_window > 1:
            y = trailing_mean(y, self.cfg.pool_window)
        return y

    def export_weights(self) -> dict[str, np.ndarray]:
        """Every weight as float64 numpy under a flat, stable name; layers via ESSMLayer.export_weights."""
        return export_block_weights(self, "essm")


@torch.no_grad()
def export_block_weights(model: nn.Module, mixer: str) -> dict[str, np.ndarray]:
    """Float64 numpy copies of a pre-norm residual model (inp, blocks with ln1 / <mixer> / MLP, ln_f,
    out) under the flat names programs use; `mixer` is the block attribute holding the sequence
    layer ("essm" or "lru"), whose own export_weights() gives its part."""
    f64 = lambda t: t.detach().cpu().to(torch.float64).numpy().copy()  # noqa: E731
    out = {"inp.W": f64(model.inp.weight), "inp.b": f64(model.inp.bias)}
    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}."
        out[p + "ln1.g"], out[p + "ln1.b"] = f64(blk.ln1.weight), f64(blk.ln1.bias)
        for k, v in getattr(blk, mixer).export_weights().items():
            out[p + mixer + "." + k] = v
        if blk.has_mlp:
            out[p + "ln2.g"], out[p + "ln2.b"] = f64(blk.ln2.weight), f64(blk.ln2.bias)
            out[p + "fc1.W"], out[p + "fc1.b"] = f64(blk.fc1.weight), f64(blk.fc1.bias)
            out[p + "fc2.W"], out[p + "fc2.b"] = f64(blk.fc2.weight), f64(blk.fc2.bias)
    out["ln_f.g"], out["ln_f.b"] = f64(model.ln_f.weight), f64(model.ln_f.bias)
    out["out.W"], out["out.b"] = f64(model.out.weight), f64(model.out.bias)
    return out
