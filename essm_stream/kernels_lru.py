"""Layer kind `lru` in the streaming engine: the compiler's arrays (`compile_lru_weights`), the
per-op kernel `lru_mix` that `kernels.stream_run` calls for an LRU layer (its numpy twin is
`lru_mix_ref`, used by `reference.stream_run_ref`), and `LRUStreamer`, a standalone whole-model
stepper over `LRUModel.export_weights()` (kept as a second, engine-independent check).

Per layer and stream (N_l states, complex split into re/im so every array is real):
    u = LN1(h)
    x ← λ ⊙ x + B̃ u              B̃ = γB, λ and B̃ precomputed from (ν, θ, B) in float64
    h ← h + Re(C x) + D ⊙ u      Re(C x) = C_re x_re − C_im x_im
    h ← h + fc2 GELU(fc1 LN2(h))  (if mlp)
y = out LN_f(h). O(N·d) per layer and step; nothing allocated per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, NonFiniteInputError, ShapeError
from .lru_config import LRUConfig
from .layout import D_MODEL, N_STATE, O_LRU_BTIM, O_LRU_BTRE, O_LRU_CIM, O_LRU_CRE, O_LRU_D, \
    O_LRU_LAMIM, O_LRU_LAMRE, ST_LRU_X, W_H, W_U, WL
from .numba_config import njit

OK, ERR_NONFINITE = 0, 1


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
        for n in range(N):
            accr = W[br] * 0
            acci = W[bi] * 0
            for j in range(d):
                uj = work[su + j]
                accr += W[br + n * d + j] * uj
                acci += W[bi + n * d + j] * uj
            xr, xi = state[xs + n], state[xs + N + n]
            a, c = W[lr + n], W[li + n]
            state[xs + n] = a * xr - c * xi + accr
            state[xs + N + n] = a * xi + c * xr + acci
        for i in range(d):
            acc = W[dd + i] * work[su + i]
            for n in range(N):
                acc += W[cr + i * N + n] * state[xs + n] - W[ci + i * N + n] * state[xs + N + n]
            work[sh + i] += acc


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


@njit
def _ln(x, g, b, eps, out):
    n = x.shape[0]
    mu = 0.0
    for j in range(n):
        mu += x[j]
    mu /= n
    var = 0.0
    for j in range(n):
        var += (x[j] - mu) * (x[j] - mu)
    inv = 1.0 / math.sqrt(var / n + eps)
    for j in range(n):
        out[j] = (x[j] - mu) * inv * g[j] + b[j]


@njit
def _gelu1(v):
    return 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))


@njit(fastmath=False)  # the NaN/Inf check must not be folded away
def _finite(X):
    for v in X.ravel():
        if not math.isfinite(v):
            return False
    return True


@njit
def lru_run(X, Y, inpW, inpb, ln1g, ln1b, lam_re, lam_im, bt_re, bt_im, c_re, c_im, Dv,
            ln2g, ln2b, fc1W, fc1b, fc2W, fc2b, lnfg, lnfb, outW, outb, Ns, mlp, eps,
            x_re, x_im, h, u, z):
    """Frames X (T, B, d_in) -> Y (T, B, d_out); x_re, x_im (n_layers, B, N_max) state in place.
    Scratch h, u (d,), z (d_hidden,). Returns OK or ERR_NONFINITE (before touching the state)."""
    if not _finite(X):
        return ERR_NONFINITE
    T, B, d_in = X.shape
    d, d_out, nl = inpW.shape[0], outW.shape[0], Ns.shape[0]
    dh = fc1W.shape[1]
    for t in range(T):
        for b in range(B):
            for i in range(d):
                acc = inpb[i]
                for j in range(d_in):
                    acc += inpW[i, j] * X[t, b, j]
                h[i] = acc
            for l in range(nl):
                N = Ns[l]
                _ln(h, ln1g[l], ln1b[l], eps, u)
                for n in range(N):                                  # x ← λ x + B̃ u
                    br = 0.0
                    bi = 0.0
                    for j in range(d):
                        br += bt_re[l, n, j] * u[j]
                        bi += bt_im[l, n, j] * u[j]
                    xr, xi = x_re[l, b, n], x_im[l, b, n]
                    x_re[l, b, n] = lam_re[l, n] * xr - lam_im[l, n] * xi + br
                    x_im[l, b, n] = lam_re[l, n] * xi + lam_im[l, n] * xr + bi
                for i in range(d):                                  # h += Re(C x) + D u
                    acc = Dv[l, i] * u[i]
                    for n in range(N):
                        acc += c_re[l, i, n] * x_re[l, b, n] - c_im[l, i, n] * x_im[l, b, n]
                    h[i] += acc
                if mlp:
                    _ln(h, ln2g[l], ln2b[l], eps, u)
                    for k in range(dh):
                        acc = fc1b[l, k]
                        for j in range(d):
                            acc += fc1W[l, k, j] * u[j]
                        z[k] = _gelu1(acc)
                    for i in range(d):
                        acc = fc2b[l, i]
                        for k in range(dh):
                            acc += fc2W[l, i, k] * z[k]
                        h[i] += acc
            _ln(h, lnfg, lnfb, eps, u)
            for o in range(d_out):
                acc = outb[o]
                for j in range(d):
                    acc += outW[o, j] * u[j]
                Y[t, b, o] = acc
    return OK


def lru_run_ref(X, Y, inpW, inpb, ln1g, ln1b, lam_re, lam_im, bt_re, bt_im, c_re, c_im, Dv,
                ln2g, ln2b, fc1W, fc1b, fc2W, fc2b, lnfg, lnfb, outW, outb, Ns, mlp, eps,
                x_re, x_im, h, u, z):
    """lru_run in plain numpy (complex arithmetic, whole vectors), same signature and effects."""
    from .reference import gelu, layer_norm
    if not np.all(np.isfinite(X)):
        return ERR_NONFINITE
    for t in range(X.shape[0]):
        for b in range(X.shape[1]):
            hv = inpW @ X[t, b] + inpb
            for l in range(Ns.shape[0]):
                N = Ns[l]
                uv = layer_norm(hv, ln1g[l], ln1b[l], eps)
                x = (lam_re[l, :N] + 1j * lam_im[l, :N]) * (x_re[l, b, :N] + 1j * x_im[l, b, :N]) \
                    + (bt_re[l, :N] + 1j * bt_im[l, :N]) @ uv
                x_re[l, b, :N], x_im[l, b, :N] = x.real, x.imag
                hv = hv + ((c_re[l, :, :N] + 1j * c_im[l, :, :N]) @ x).real + Dv[l] * uv
                if mlp:
                    zz = layer_norm(hv, ln2g[l], ln2b[l], eps)
                    hv = hv + fc2W[l] @ gelu(fc1W[l] @ zz + fc1b[l]) + fc2b[l]
            Y[t, b] = outW @ layer_norm(hv, lnfg, lnfb, eps) + outb
    return OK


@dataclass
class LRUState:
    """All streaming state of an LRUStreamer (copies): the complex states split re/im, steps seen."""
    x_re: np.ndarray
    x_im: np.ndarray
    steps: int


class LRUStreamer:
    """Steps an LRU model one frame at a time (B streams) with the numba kernel; torch-free.

    LRUStreamer(weights, cfg, batch=1, dtype=np.float32); step(x_t) -> y_t, run(X) -> Y,
    reset(), snapshot(), restore(). Outputs are fresh arrays.
    """

    def __init__(self, weights: dict, cfg: LRUConfig, batch: int = 1, dtype=np.float32, reference: bool = False):
        if not isinstance(cfg, LRUConfig):
            raise ConfigError(f"LRUStreamer needs an LRUConfig, got {type(cfg).__name__}")
        if cfg.head == "mean" and cfg.pool_window > 1:
            raise ConfigError("LRUStreamer supports head='step' only (the mean head needs a window ring)")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ConfigError(f"dtype must be float32 or float64, got {dtype}")
        if not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"batch must be an int >= 1, got {batch!r}")
        self.cfg, self.batch, self.dtype = cfg, batch, np.dtype(dtype)
        self._a = pack_lru(weights, cfg, self.dtype)
        nl, Nm = cfg.n_layers, int(self._a["Ns"].max())
        self._x_re = np.zeros((nl, batch, Nm), self.dtype)
        self._x_im = np.zeros((nl, batch, Nm), self.dtype)
        d = cfg.d_model
        self._h, self._u = np.zeros(d, self.dtype), np.zeros(d, self.dtype)
        self._z = np.zeros(self._a["fc1W"].shape[1], self.dtype)
        self._kernel = lru_run_ref if reference else lru_run
        a = self._a
        self._w = (a["inpW"], a["inpb"], a["ln1g"], a["ln1b"], a["lam_re"], a["lam_im"], a["bt_re"], a["bt_im"],
                   a["c_re"], a["c_im"], a["Dv"], a["ln2g"], a["ln2b"], a["fc1W"], a["fc1b"], a["fc2W"], a["fc2b"],
                   a["lnfg"], a["lnfb"], a["outW"], a["outb"], a["Ns"], bool(cfg.mlp), float(cfg.ln_eps))
        self.steps = 0

    def run(self, X) -> np.ndarray:
        """X (T, B, d_in), or (T, d_in) for batch 1 -> Y of the same leading shape, d_out last."""
        X = np.asarray(X)
        squeeze = X.ndim == 2 and self.batch == 1
        if squeeze:
            X = X[:, None, :]
        if X.ndim != 3 or X.shape[1:] != (self.batch, self.cfg.d_in):
            raise ShapeError(f"X has shape {X.shape}, expected (T, {self.batch}, {self.cfg.d_in})"
                             + (f" or (T, {self.cfg.d_in})" if self.batch == 1 else ""))
        X = np.ascontiguousarray(X, dtype=self.dtype)
        Y = np.empty((X.shape[0], self.batch, self.cfg.d_out), self.dtype)
        if self._kernel(X, Y, *self._w, self._x_re, self._x_im, self._h, self._u, self._z) != OK:
            raise NonFiniteInputError("input holds NaN or Inf; the LRU state was left unchanged")
        self.steps += X.shape[0]
        return Y[:, 0] if squeeze else Y

    def step(self, x_t) -> np.ndarray:
        """One frame: x_t (B, d_in), or (d_in,) for batch 1."""
        x_t = np.asarray(x_t)
        return self.run(x_t[None])[0]

    def reset(self) -> None:
        self._x_re.fill(0)
        self._x_im.fill(0)
        self.steps = 0

    def snapshot(self) -> LRUState:
        return LRUState(self._x_re.copy(), self._x_im.copy(), self.steps)

    def restore(self, s: LRUState) -> None:
        if not isinstance(s, LRUState):
            raise ConfigError(f"restore needs an LRUState, got {type(s).__name__}")
        for name in ("x_re", "x_im"):
            a = getattr(s, name)
            if not isinstance(a, np.ndarray) or a.shape != self._x_re.shape:
                raise ShapeError(f"LRUState.{name} must have shape {self._x_re.shape}")
            if not np.all(np.isfinite(a)):
                raise ConfigError(f"LRUState.{name} holds NaN or Inf")
        if not isinstance(s.steps, int) or s.steps < 0:
            raise ConfigError(f"LRUState.steps must be an int >= 0, got {s.steps!r}")
        np.copyto(self._x_re, s.x_re)
        np.copyto(self._x_im, s.x_im)
        self.steps = s.steps
