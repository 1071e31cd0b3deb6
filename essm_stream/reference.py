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


def residual_model_ref(x: np.ndarray, w: dict, cfg, mixer: str, layer) -> np.ndarray:
    """A pre-norm residual model on one sequence, x (T, d_in) -> (T, d_out): input projection, blocks
    h += layer(LN1(h), weights of blocks.i.<mixer>.*) and h += MLP(LN2(h)), final LN, head. The layer
    kinds (ES-SSM here, LRU in lru_reference) differ only in `layer`."""
    T = x.shape[0]
    h = x @ w["inp.W"].T + w["inp.b"]
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        q = p + mixer + "."
        lw = {k[len(q):]: v for k, v in w.items() if k.startswith(q)}
        h = h + layer(layer_norm(h, w[p + "ln1.g"], w[p + "ln1.b"], cfg.ln_eps), lw)
        if cfg.mlp:
            z = layer_norm(h, w[p + "ln2.g"], w[p + "ln2.b"], cfg.ln_eps)
            h = h + gelu(z @ w[p + "fc1.W"].T + w[p + "fc1.b"]) @ w[p + "fc2.W"].T + w[p + "fc2.b"]
    y = layer_norm(h, w["ln_f.g"], w["ln_f.b"], cfg.ln_eps) @ w["out.W"].T + w["out.b"]
    if cfg.head == "mean" and cfg.pool_window > 1:
        W = cfg.pool_window
        y = np.stack([y[max(0, t - W + 1): t + 1].mean(0) for t in range(T)])
    return y


def model_ref(x: np.ndarray, w: dict, cfg: ESSMConfig, K) -> np.ndarray:
    """The whole model on one sequence, x (T, d_in) -> (T, d_out); weights from ESSMModel.export_weights()."""
    return residual_model_ref(x, w, cfg, "essm", lambda u, lw: layer_ref(u, lw, K, cfg.gate_eps))


def stream_run_ref(X, Ks, W, off, lay, state, ist, work, Y, nan_zero, w=None):
    """Plain numpy float64 version of `kernels.stream_run`: same signature, same packed weights and
    state layout (so state can be handed from one to the other), the maths of this module.

    `work` is not used. Engine: `StreamEngine(prog, kernel="ref")`. Overflow handling as stream_run.
    `w`: `layout.unpack(W, off, lay)` from a caller that steps the same W call after call (the engine's
    interim kernel while its compiled one builds: unpacking every call was about half of a small
    program's reference step); None: unpacked here.
    """
    from . import layout as lo
    from .kernels import ERR_BUDGET, ERR_NONFINITE, ERR_OVERFLOW, OK
    T, B, _ = X.shape
    g = lo.dims_of_lay(lay)
    d, d_out, nl, L, Kb, PW = g["d"], g["d_out"], g["n_layers"], g["L"], g["k_max"], g["pool_W"]
    Ks = np.asarray(Ks)
    if Ks.min() < 1 or Ks.max() > Kb:
        t, b = np.argwhere((Ks < 1) | (Ks > Kb))[0]
        ist[lo.IST_ERR_T], ist[lo.IST_ERR_B], ist[lo.IST_ERR_K] = t, b, Ks[t, b]
        return ERR_BUDGET
    bad = ~np.isfinite(X)
    if bad.any() and not nan_zero:
        ist[lo.IST_ERR_T], ist[lo.IST_ERR_B], ist[lo.IST_ERR_J] = np.argwhere(bad)[0]
        return ERR_NONFINITE
    if w is None:
        w = lo.unpack(W, off, lay)
    ln_eps, gate_eps = w["eps"]
    lds, N = bool(g["lds"]), g["lds_n"]
    H = None
    if not lds:   # H[l][b]: stream b's (2L, d) history rows in layer l, a view (layout.hist_block)
        H = []
        for l in range(nl):
            H.append([])
            for b in range(B):
                o, width, b0, nb = lo.hist_block(lay, B, l, b // int(lay[lo.HIST_BLK]))
                H[l].append(state[o:o + 2 * L * width].reshape(2 * L, nb, d)[:, b - b0])
    if lds:   # spectral="lds": ladder states (l, b, n, d) and the (l, b, L, d) ring of past inputs
        from .lds import ladder_step_ref
        S = state[lay[lo.ST_LDS]:lay[lo.ST_LDS] + nl * B * N * d].reshape(nl, B, N, d)
        R = state[lay[lo.ST_LRING]:lay[lo.ST_LRING] + nl * B * L * d].reshape(nl, B, L, d) if g["lds_buf"] else None
    P = state[lay[lo.ST_POOL]:lay[lo.ST_POOL] + B * PW * d_out].reshape(B, PW, d_out) if g["pooled"] else None
    if g["lru"]:   # layer kind lru: its complex states (kernels_lru.lru_mix_ref)
        from .kernels_lru import lru_mix_ref
        NS = g["n_state"]
        XS = state[lay[lo.ST_LRU_X]:lay[lo.ST_LRU_X] + nl * B * 2 * NS].reshape(nl, B, 2 * NS)
    for t in range(T):
        p = int(ist[lo.IST_POS])
        steps = int(ist[lo.IST_T]) + 1
        pp = int(ist[lo.IST_POOL])
        undo = (None if H is None else [[h[p].copy() for h in Hl] for Hl in H], None if P is None else P[:, pp].copy())
        u_finite = True                                       # layer kind lru / LDS keep no window to check
        if lds:   # what this frame overwrites: ladder states, ring row p
            undo_lds = (S.copy(), None if R is None else R[:, :, p].copy())
        if g["lru"]:
            undo_x = XS.copy()
        for b in range(B):
            K = int(Ks[t, b])
            x = np.where(bad[t, b], 0.0, np.asarray(X[t, b], dtype=np.float64))
            ist[lo.IST_NREPLACED] += int(bad[t, b].sum())
            h = w["inp.W"] @ x + w["inp.b"]
            for l in range(nl):
                u = layer_norm(h, w["ln1.g"][l], w["ln1.b"][l], ln_eps)
                if g["lru"]:
                    u_finite = u_finite and bool(np.all(np.isfinite(u)))
                    h = lru_mix_ref(w, XS, l, b, B, u, h)
                    if g["mlp"]:
                        z = layer_norm(h, w["ln2.g"][l], w["ln2.b"][l], ln_eps)
                        h = h + w["fc2.W"][l] @ gelu(w["fc1.W"][l] @ z + w["fc1.b"][l]) + w["fc2.b"][l]
                    continue
                if lds:
                    u_finite = u_finite and bool(np.all(np.isfinite(u)))
                    u_old = np.zeros(d)
                    if R is not None:
                        u_old = R[l, b, p].astype(np.float64)                   # u(t-L), leaving the window
                        R[l, b, p] = u
                    v = S[l, b].astype(np.float64)                              # (N, d)
                    ladder_step_ref(v, u, u_old, w["lds.a"][l], w["lds.bL"][l])
                    S[l, b] = v
                    c = w["lds.C"][l, :K] @ v                                   # (K, d)
                else:
                    H[l][b][p] = u                                              # time-major rows
                    H[l][b][p + L] = u
                    window = H[l][b][p + 1:p + 1 + L].astype(np.float64)       # (L, d), oldest first
                    c = w["phir"][l, :K] @ window                               # (K, d)
                gate_w = {"sigma": np.ones(Kb)}
                if g["gated"]:
                    gate_w.update(W1=w["W1"][l], b1=w["b1"][l], W2=w["W2"][l], b2=w["b2"][l])
                alpha = mixture_weights_ref(u, gate_w, K, gate_eps)[:K]
                V = np.concatenate([u, (alpha[:, None] * c).ravel()])
                h = h + w["Mcat"][l][:, :(K + 1) * d] @ V
                if g["mlp"]:
                    z = layer_norm(h, w["ln2.g"][l], w["ln2.b"][l], ln_eps)
                    h = h + w["fc2.W"][l] @ gelu(w["fc1.W"][l] @ z + w["fc1.b"][l]) + w["fc2.b"][l]
            y = w["out.W"] @ layer_norm(h, w["ln_f.g"], w["ln_f.b"], ln_eps) + w["out.b"]
            if P is not None:
                P[b, pp] = y
                n = min(steps, PW)
                y = np.mean([P[b, (pp - n + 1 + r) % PW] for r in range(n)], axis=0)
            Y[t, b] = y
        if not (u_finite and (H is None or all(np.all(np.isfinite(h[p])) for Hl in H for h in Hl)) and np.all(np.isfinite(Y[t]))):
            if H is not None:                                                   # overflow: take back
                for Hl, Ul in zip(H, undo[0]):
                    for h, v in zip(Hl, Ul):
                        h[p] = h[p + L] = v
            if lds:
                S[...] = undo_lds[0]
                if R is not None:
                    R[:, :, p] = undo_lds[1]
            if g["lru"]:
                XS[...] = undo_x
            if P is not None:
                P[:, pp] = undo[1]
            ist[lo.IST_ERR_T] = t
            if not nan_zero:
                return ERR_OVERFLOW
            Y[t] = 0.0
            ist[lo.IST_SKIPPED] += 1
            continue
        ist[lo.IST_POS] = (p + 1) % L
        ist[lo.IST_T] = steps
        if P is not None:
            ist[lo.IST_POOL] = (pp + 1) % PW
    return OK
