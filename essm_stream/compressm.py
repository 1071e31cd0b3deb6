"""CompreSSM (Chahine et al. 2025): in-training balanced truncation of the LRU's diagonal LTI systems.

For one layer, A = diag(λ), B̃ = γB (N, d), C (d, N):
  controllability Gramian  P = A P A^H + B̃ B̃^H  ->  P_ij = (B̃ B̃^H)_ij / (1 − λ_i conj λ_j)
  observability Gramian    Q = A^H Q A + C^H C  ->  Q_ij = (C^H C)_ij / (1 − conj λ_i λ_j)
  Hankel singular values   g = sqrt(eig(P Q)), descending (computed as the singular values of
                           Zq^H Zp with P = Zp Zp^H, Q = Zq Zq^H: no product of two ill-conditioned
                           matrices is formed)
Balanced truncation to rank r (square-root method) keeps the r states of largest g and satisfies
‖G − G_r‖_∞ ≤ 2 Σ_{k>r} g_k. The reduced A_r is dense; it is re-diagonalised (eig) so the layer
keeps its LRU parametrisation, and modes with arg λ < 0 are replaced by their conjugates (the
layer reads Re(C x) of a real input, for which (λ, b, c) and (conj λ, conj b, conj c) are the same).

The numpy functions here are torch-free; `reduce_model` (torch) applies a rule to a training model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)

SHRINK = 0.95   # reduce a layer only when the new rank is below 0.95 of the current one (CompreSSM)


def gramians(lam: np.ndarray, Bt: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form (P, Q) of the diagonal system (λ (N,), B̃ (N, m), C (p, N)); needs |λ| < 1."""
    lam = np.asarray(lam, np.complex128)
    if np.any(np.abs(lam) >= 1):
        raise ConfigError(f"gramians need a stable system, max |λ| = {np.abs(lam).max()}")
    P = (Bt @ Bt.conj().T) / (1.0 - lam[:, None] * lam.conj()[None, :])
    Q = (C.conj().T @ C) / (1.0 - lam.conj()[:, None] * lam[None, :])
    return P, Q


def _psd_factor(M: np.ndarray) -> np.ndarray:
    """Z with M = Z Z^H for a Hermitian PSD M (negative rounding eigenvalues clipped to 0)."""
    w, V = np.linalg.eigh(0.5 * (M + M.conj().T))
    return V * np.sqrt(np.clip(w, 0.0, None))[None, :]


def _balance(lam, Bt, C):
    P, Q = gramians(lam, Bt, C)
    Zp, Zq = _psd_factor(P), _psd_factor(Q)
    U, g, Vh = np.linalg.svd(Zq.conj().T @ Zp)
    return Zp, Zq, U, g, Vh


def hankel_singular_values(lam: np.ndarray, Bt: np.ndarray, C: np.ndarray) -> np.ndarray:
    """HSVs g (N,), descending."""
    return _balance(lam, Bt, C)[3]


def rank_for_energy(g: np.ndarray, energy: float) -> int:
    """Smallest r whose leading HSVs hold `energy` of Σ g (CompreSSM's tolerance rule, 1 − τ)."""
    if not 0.0 < energy <= 1.0:
        raise ConfigError(f"energy fraction must be in (0, 1], got {energy}")
    total = float(np.sum(g))
    if total <= 0:
        return 1
    return int(min(len(g), np.searchsorted(np.cumsum(g) / total, energy - 1e-12) + 1))


def balanced_truncation(lam, Bt, C, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(A_r (r, r), B_r (r, m), C_r (p, r), g (N,)): the rank-r balanced truncation, dense A_r."""
    N = len(lam)
    if not 1 <= r <= N:
        raise ConfigError(f"truncation rank must be in [1, {N}], got {r}")
    Zp, Zq, U, g, Vh = _balance(lam, Bt, C)
    if g[r - 1] <= 0:
        raise ConfigError(f"rank {r} exceeds the system's numerical rank (g_{r} = {g[r - 1]:.3g})")
    s = g[:r] ** -0.5
    Tr = (Zp @ Vh.conj().T[:, :r]) * s[None, :]          # (N, r) right balancing map
    Tl = s[:, None] * (U[:, :r].conj().T @ Zq.conj().T)   # (r, N), Tl Tr = I
    Ar = Tl @ (lam[:, None] * Tr)
    return Ar, Tl @ Bt, C @ Tr, g


def rediagonalise(Ar: np.ndarray, Br: np.ndarray, Cr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(λ_r, B̃_r, C_r) diagonal with arg λ_r in [0, π]: A_r = V diag(λ_r) V^-1, conjugating modes
    with arg λ < 0 (same real output for real input)."""
    lam, V = np.linalg.eig(Ar)
    return positive_phase(lam, np.linalg.solve(V, Br), Cr @ V)


def positive_phase(lam, B, C):
    """Replace every mode with arg λ < 0 by its conjugate (λ, b, c) -> (conj λ, conj b, conj c): the
    same real output Re(C x) for a real input, and the LRU parametrisation needs arg λ in [0, π]."""
    neg = np.angle(lam) < 0
    return (np.where(neg, lam.conj(), lam), np.where(neg[:, None], B.conj(), B),
            np.where(neg[None, :], C.conj(), C))


def reduce_system(lam, Bt, C, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Balanced truncation to rank r, re-diagonalised: (λ_r, B̃_r, C_r, g)."""
    Ar, Br, Cr, g = balanced_truncation(lam, Bt, C, r)
    lr, Bd, Cd = rediagonalise(Ar, Br, Cr)
    if np.any(np.abs(lr) >= 1):  # balanced truncation preserves stability; guard against rounding
        raise ConfigError(f"reduced system is not stable (max |λ| = {np.abs(lr).max():.6f})")
    return lr, Bd, Cd, g


def transfer(lam, Bt, C, omegas: np.ndarray) -> np.ndarray:
    """G(e^{iω}) = Σ_n C[:, n] B̃[n, :] / (1 − λ_n e^{−iω}) for each ω -> (W, p, m) (x(t) = λx(t−1) + B̃u(t))."""
    z = np.exp(-1j * np.asarray(omegas))[:, None]                         # (W, 1)
    w = 1.0 / (1.0 - lam[None, :] * z)                                     # (W, N)
    return np.einsum("pn,wn,nm->wpm", C, w, Bt)


def impulse_response(lam, Bt, C, T: int, real: bool = True) -> np.ndarray:
    """h(k) = C λ^k B̃ (its real part when real=True: what the layer outputs), (T, p, m)."""
    k = np.arange(T)[:, None]
    h = np.einsum("pn,kn,nm->kpm", C, lam[None, :] ** k, Bt)
    return h.real if real else h


# ----------------------------------------------------------------------------- in-training rule
@dataclass(frozen=True)
class CompressRule:
    """What to keep (an HSV energy fraction or a fixed rank) and when (fractions of the steps)."""
    energy: float | None = None
    rank: int | None = None
    at: tuple = (0.2, 0.4)
    method: str = "balanced"   # balanced (CompreSSM) | modal (control: keep modes, no balancing)

    def __post_init__(self):
        if (self.energy is None) == (self.rank is None):
            raise ConfigError("a compression rule needs exactly one of energy=F or rank=N")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise ConfigError(f"compress energy must be in (0, 1], got {self.energy}")
        if self.rank is not None and self.rank < 1:
            raise ConfigError(f"compress rank must be >= 1, got {self.rank}")
        if self.method not in ("balanced", "modal"):
            raise ConfigError(f"compress method must be balanced or modal, got {self.method!r}")
        at = tuple(float(a) for a in self.at)
        if not at or any(not 0.0 < a < 1.0 for a in at):
            raise ConfigError(f"compress --at fractions must lie in (0, 1), got {self.at}")
        object.__setattr__(self, "at", tuple(sorted(at)))

    @classmethod
    def parse(cls, spec: str, at: str | None = None) -> "CompressRule":
        """'energy=0.99' or 'rank=8', with at='0.2,0.4'."""
        key, sep, val = str(spec).partition("=")
        try:
            kw = {"energy": float(val)} if key == "energy" else {"rank": int(val)} if key == "rank" else None
            ats = tuple(float(a) for a in at.split(",")) if at else (0.2, 0.4)
        except ValueError:
            raise ConfigError(f"cannot parse compression {spec!r} / at {at!r}: use energy=0.99 or rank=8, at 0.2,0.4") from None
        if not sep or kw is None:
            raise ConfigError(f"compression must be energy=F or rank=N, got {spec!r}")
        return cls(at=ats, **kw)

    def to_dict(self) -> dict:
        d = {"energy": self.energy, "rank": self.rank, "at": list(self.at)}
        if self.method != "balanced":
            d["method"] = self.method
        return d

    def steps(self, total: int) -> list[int]:
        """Training steps (1-based counts of finished steps) at which to reduce."""
        return sorted({max(1, min(total - 1, int(round(a * total)))) for a in self.at})

    def target_rank(self, g: np.ndarray) -> int:
        return min(len(g), self.rank) if self.rank is not None else rank_for_energy(g, self.energy)


def modal_scores(lam, Bt, C) -> np.ndarray:
    """Per-mode weight of a diagonal system, ‖C[:, n]‖ ‖B̃[n, :]‖ / (1 − |λ_n|²) (the H2 size of the
    mode alone): what modal truncation ranks by, ignoring how modes overlap."""
    return np.linalg.norm(C, axis=0) * np.linalg.norm(Bt, axis=1) / (1.0 - np.abs(lam) ** 2)


def reduce_model(model, rule: CompressRule, optimizer=None) -> dict:
    """Reduce every LRU layer of `model` whose target rank is < 0.95 of its current state size.

    The optimizer (AdamW) keeps its moments for every parameter that is not replaced; the reduced
    layers' ν, θ, B, C are new tensors in a new (balanced, re-diagonalised) state basis, so their
    moments restart from zero (the old moments live in the old basis: there is no exact truncation of
    them). Returns {"ranks": [N per layer after], "hsv": [g per layer before], "reduced": [bool]}.
    """
    ranks, hsvs, reduced = [], [], []
    for blk in model.blocks:
        layer = blk.lru
        lam, Bt, C = layer.system()
        g = hankel_singular_values(lam, Bt, C)
        r = rule.target_rank(g)
        hsvs.append([float(v) for v in g])
        if r < SHRINK * layer.N:
            if rule.method == "modal":   # the control: keep the r heaviest modes as they are
                keep = np.sort(np.argsort(-modal_scores(lam, Bt, C))[:r])
                lr, Br, Cr = positive_phase(lam[keep], Bt[keep], C[:, keep])   # exp θ may exceed π
            else:
                lr, Br, Cr, _ = reduce_system(lam, Bt, C, r)
            mapping = layer.set_system(lr, Br, Cr)
            if optimizer is not None:
                for group in optimizer.param_groups:
                    group["params"] = [mapping.get(p, p) for p in group["params"]]
                for old in mapping:
                    optimizer.state.pop(old, None)
            log.info("CompreSSM: layer reduced %d -> %d states (kept %.4f of the HSV energy; bound 2Σg_discarded = %.3g)",
                     len(g), r, float(np.sum(g[:r]) / max(np.sum(g), 1e-300)), 2 * float(np.sum(g[r:])))
            reduced.append(True)
        else:
            reduced.append(False)
        ranks.append(layer.N)
    model.sync_config()
    return {"ranks": ranks, "hsv": hsvs, "reduced": reduced}
