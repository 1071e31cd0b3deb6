"""Layer kind `lru` in the streaming engine: the compiler's arrays (`compile_lru_weights`) and the
per-op kernel `lru_mix` that `kernels.stream_run` calls for an LRU layer (its numpy twin is
`lru_mix_ref`, used by `reference.stream_run_ref`). Torch-free.

Per layer and stream (N_l states, complex split into re/im so every array is real):
    u = LN1(h)
    x ← λ ⊙ x + B̃ u              B̃ = γB, λ and B̃ precomputed from (ν, θ, B) in float64
    h ← h + Re(C x) + D ⊙ u      Re(C x) = C_re x_re − C_im x_im
    h ← h + fc2 GELU(fc1 LN2(h))  (if mlp)
y = out LN_f(h). O(N·d) per layer and step; nothing allocated per step.
"""
from __future__ import annotations

import numpy as np

from .errors import ShapeError
from .lru_config import LRUConfig
from .layout import D_MODEL, N_STATE, O_LRU_BTIM, O_LRU_BTRE, O_LRU_CIM, O_LRU_CRE, O_LRU_D, \
    O_LRU_LAMIM, O_LRU_LAMRE, ST_LRU_X, W_H, W_LRU_UNDO, W_U, WL, N_LAYERS
from .numba_config import njit


# -------------------------------------------------------------------------------- engine layer kind
def compile_lru_weights(w: dict, cfg: LRUConfig) -> dict[str, np.ndarray]:
    """LRUModel.export_weights() (float64) -> program arrays (names and shapes: layout.program_shapes).

    λ = exp(−exp ν + i exp θ) and B̃ = γB computed here in float64, so the step is products only;
    layers with fewer states than n_state = max N are padded with λ = B̃ = C = 0."""
    from .errors import ProgramError
    a = pack_lru(w, cfg, np.float64)
    nl, d = cfg.n_layers, cfg.d_model
    out = {"inp.W": a["inpW"], "inp.b": a["inpb"], "ln1.g": a["ln1g"], "ln1.b": a["ln1b"],
           "ln_f.g": a["lnfg"], "ln_f.b": a["lnfb"], "out.W": a["outW"], "out.b": a["outb"],
           "lru.lam_re": a["lam_re"], "lru.lam_im": a["lam_im"], "lru.bt_re": a["bt_re"],
           "lru.bt_im": a["bt_im"], "lru.c_re": a["c_re"], "lru.c_im": a["c_im"], "lru.D": a["Dv"]}
    if cfg.mlp:
        out.update({"ln2.g": a["ln2g"], "ln2.b": a["ln2b"], "fc1.W": a["fc1W"], "fc1.b": a["fc1b"],
                    "fc2.W": a["fc2W"], "fc2.b": a["fc2b"]})
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise ProgramError(f"weight {k!r} holds NaN or Inf: the model cannot be compiled")
    assert out["lru.D"].shape == (nl, d)
    return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in out.items()}


@njit(inline="always")
def _seg(off, s, l):
    return off[2 * s] + l * off[2 * s + 1]


@njit(inline="always")
def lru_mix(W, off, lay, state, work, B, l):
    """Layer l of kind lru for every stream: x ← λ x + B̃ u; h += Re(C x) + D u (u = LN1(h) in work)."""
    wl, d, N = lay[WL], lay[D_MODEL], lay[N_STATE]
    lr, li = _seg(off, O_LRU_LAMRE, l), _seg(off, O_LRU_LAMIM, l)
    br, bi = _seg(off, O_LRU_BTRE, l), _seg(off, O_LRU_BTIM, l)
    cr, ci, dd = _seg(off, O_LRU_CRE, l), _seg(off, O_LRU_CIM, l), _seg(off, O_LRU_D, l)
    for b in range(B):
        su, sh = b * wl + lay[W_U], b * wl + lay[W_H]
        xs = lay[ST_LRU_X] + (l * B + b) * 2 * N
        ub = b * wl + lay[W_LRU_UNDO] + l * 2 * N                     # old state, to take the frame back
        for n in range(N):
            accr = W[br] * 0
            acci = W[bi] * 0
            for j in range(d):
                uj = work[su + j]
                accr += W[br + n * d + j] * uj
                acci += W[bi + n * d + j] * uj
            xr, xi = state[xs + n], state[xs + N + n]
            work[ub + n] = xr
            work[ub + N + n] = xi
            a, c = W[lr + n], W[li + n]
            state[xs + n] = a * xr - c * xi + accr
            state[xs + N + n] = a * xi + c * xr + acci
        for i in range(d):
            acc = W[dd + i] * work[su + i]
            for n in range(N):
                acc += W[cr + i * N + n] * state[xs + n] - W[ci + i * N + n] * state[xs + N + n]
            work[sh + i] += acc


@njit(inline="always")
def lru_undo(state, work, lay, B):
    """Put back every layer's state as it was before this frame (saved by lru_mix)."""
    wl, N, nl = lay[WL], lay[N_STATE], lay[N_LAYERS]
    for l in range(nl):
        for b in range(B):
            xs = lay[ST_LRU_X] + (l * B + b) * 2 * N
            ub = b * wl + lay[W_LRU_UNDO] + l * 2 * N
            for n in range(2 * N):
                state[xs + n] = work[ub + n]


def lru_mix_ref(w: dict, X: np.ndarray, l: int, b: int, B: int, u: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Numpy twin of lru_mix for one stream: w = layout.unpack(...), X the (n_layers, B, 2N) state
    view (updated in place) -> the new residual h."""
    N = X.shape[-1] // 2
    lam = w["lru.lam_re"][l] + 1j * w["lru.lam_im"][l]
    x = lam * (X[l, b, :N] + 1j * X[l, b, N:]) + (w["lru.bt_re"][l] + 1j * w["lru.bt_im"][l]) @ u
    X[l, b, :N], X[l, b, N:] = x.real, x.imag
    return h + ((w["lru.c_re"][l] + 1j * w["lru.c_im"][l]) @ x).real + w["lru.D"][l] * u


def pack_lru(w: dict, cfg: LRUConfig, dtype) -> dict:
    """export_weights() (float64) -> the kernel's arrays in `dtype`; states padded to max N."""
    nl, d = cfg.n_layers, cfg.d_model
    Ns = np.array(cfg.layer_states(), np.int64)
    Nm = int(Ns.max())
    dh = cfg.mlp_ratio * d if cfg.mlp else 1
    a = {k: np.zeros(s) for k, s in dict(
        ln1g=(nl, d), ln1b=(nl, d), lam_re=(nl, Nm), lam_im=(nl, Nm), bt_re=(nl, Nm, d), bt_im=(nl, Nm, d),
        c_re=(nl, d, Nm), c_im=(nl, d, Nm), Dv=(nl, d), ln2g=(nl, d), ln2b=(nl, d), fc1W=(nl, dh, d),
        fc1b=(nl, dh), fc2W=(nl, d, dh), fc2b=(nl, d)).items()}
    for i in range(nl):
        p = f"blocks.{i}."
        N = Ns[i]
        lam = np.exp(-np.exp(w[p + "lru.nu"]) + 1j * np.exp(w[p + "lru.theta"]))
        gam = np.sqrt(-np.expm1(-2.0 * np.exp(w[p + "lru.nu"])))
        if lam.shape != (N,) or w[p + "lru.B_re"].shape != (N, d) or w[p + "lru.C_re"].shape != (d, N):
            raise ShapeError(f"layer {i}: weights do not match the config's state size {N} and d_model {d}")
        a["lam_re"][i, :N], a["lam_im"][i, :N] = lam.real, lam.imag
        a["bt_re"][i, :N], a["bt_im"][i, :N] = w[p + "lru.B_re"] * gam[:, None], w[p + "lru.B_im"] * gam[:, None]
        a["c_re"][i, :, :N], a["c_im"][i, :, :N] = w[p + "lru.C_re"], w[p + "lru.C_im"]
        a["Dv"][i] = w[p + "lru.D"]
        a["ln1g"][i], a["ln1b"][i] = w[p + "ln1.g"], w[p + "ln1.b"]
        if cfg.mlp:
            a["ln2g"][i], a["ln2b"][i] = w[p + "ln2.g"], w[p + "ln2.b"]
            a["fc1W"][i], a["fc1b"][i] = w[p + "fc1.W"], w[p + "fc1.b"]
            a["fc2W"][i], a["fc2b"][i] = w[p + "fc2.W"], w[p + "fc2.b"]
    a.update(inpW=w["inp.W"], inpb=w["inp.b"], lnfg=w["ln_f.g"], lnfb=w["ln_f.b"], outW=w["out.W"], outb=w["out.b"])
    out = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in a.items()}
    out["Ns"] = Ns
    return out
