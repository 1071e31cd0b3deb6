"""Replay: judge every controller on the *same* recorded load, deterministically.

A `LoadTrace` holds, per control step, the slowdown the engine suffered under a real co-running load
(s_t = measured step latency / the unloaded paced median latency of the K that ran, recorded at a
seeded random K per step) and the CPU telemetry that was readable at that step (core utilisation,
PSI stall fraction, run queue, the load level that was switched on). `replay` closes the loop on it:

    latency_t = profile.lat(K_t) · s_t          (model "multiplicative": the load multiplies every K's latency)
    latency_t = profile.lat(K_t) · b_t + d_t    (model "delay": a body slowdown b_t plus a fixed delay d_t,
                                                 see `body_and_delay`)
    energy    = idle_w · period + dyn_w · latency_t per step (PowerModel)

and the controller sees, before step t, the telemetry of step t-1 exactly as the runner would give
it. So every controller, every fixed K and the oracle meet the same slowdowns, and a comparison is
decisive and repeatable. Files are compressed .npz without pickle; `meta` is a JSON string.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .clock import FakeClock
from .errors import ProfileError
from .telemetry import Telemetry

__all__ = ["LoadTrace", "ReplayResult", "replay", "oracle", "energy_oracle", "body_and_delay", "TRACE_COLUMNS",
           "REPLAY_MODELS"]
REPLAY_MODELS = ("multiplicative", "delay")

# column: (stored dtype, required)
TRACE_COLUMNS = {"slowdown": (np.float16, True), "t_s": (np.float32, False), "k_recorded": (np.uint8, False),
                 "cpu_util": (np.float16, False), "psi_some_frac": (np.float16, False),
                 "run_queue": (np.float16, False), "load": (np.uint8, False)}


@dataclass
class LoadTrace:
    """Per-step slowdown and telemetry recorded under a real load (NaN = not readable then)."""
    slowdown: np.ndarray
    columns: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        s = np.asarray(self.slowdown, dtype=np.float64)
        if s.ndim != 1 or len(s) < 2:
            raise ProfileError(f"a load trace needs a 1-D slowdown column of >= 2 steps, got shape {s.shape}")
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ProfileError("a load trace's slowdown must be finite and > 0 at every step")
        self.slowdown = s
        cols = {}
        for name, v in self.columns.items():
            if name not in TRACE_COLUMNS or name == "slowdown":
                raise ProfileError(f"unknown trace column {name!r} (known: {sorted(TRACE_COLUMNS)})")
            v = np.asarray(v, dtype=np.float64)
            if v.shape != s.shape:
                raise ProfileError(f"trace column {name!r} has shape {v.shape}, slowdown has {s.shape}")
            cols[name] = v
        self.columns = cols

    def __len__(self) -> int:
        return len(self.slowdown)

    def col(self, name: str) -> np.ndarray:
        """A column, all NaN when it was not recorded."""
        return self.columns.get(name, np.full(len(self), np.nan))

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "trace"))

    @property
    def profile_latency(self) -> tuple[list[int], list[float]] | None:
        """(K, unloaded paced median latency) measured in the same session, if stored."""
        p = self.meta.get("latency_profile")
        return None if not p else (list(p["K"]), list(p["latency_s"]))

    def recorded_k(self) -> np.ndarray:
        """The budget each step was recorded at: the recorder draws it per step from the latency
        profile's K with the trace's seed (sims/record_traces.py), so it is regenerated, not stored."""
        m = self.meta
        p = self.profile_latency
        if p is None or "seed" not in m:
            raise ProfileError(f"trace {self.name!r} has no seed / latency_profile: its per-step K is unknown")
        w = int(m.get("warmup_steps_dropped", 0))
        return np.random.default_rng(m["seed"]).choice(np.array(p[0]), size=len(self) + w)[w:]

    def save(self, path: str) -> None:
        """Compressed .npz (no pickle); written to a temporary name, then renamed."""
        import os
        import tempfile
        # float16 keeps 3 significant digits (0.05%), far below the step-to-step jitter, at half the size
        arrays = {"slowdown": np.clip(self.slowdown, 1e-3, 6e4).astype(np.float16)}
        for name, v in self.columns.items():
            dt = TRACE_COLUMNS[name][0]
            if np.issubdtype(dt, np.integer):
                v = np.nan_to_num(v, nan=np.iinfo(dt).max).clip(0, np.iinfo(dt).max)
            arrays[name] = v.astype(dt)
        arrays["meta"] = np.array(json.dumps(self.meta))
        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".trace.", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **arrays)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str) -> "LoadTrace":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ProfileError(f"cannot read load trace {path!r}: {e}") from None
        if "slowdown" not in data:
            raise ProfileError(f"{path!r} is not a load trace (no 'slowdown' array)")
        try:
            meta = json.loads(str(data.pop("meta"))) if "meta" in data else {}
        except json.JSONDecodeError as e:
            raise ProfileError(f"{path!r}: meta is not JSON: {e}") from None
        slow = data.pop("slowdown")
        cols = {}
        for name, v in data.items():
            dt = TRACE_COLUMNS.get(name, (None,))[0]
            v = v.astype(np.float64)
            if dt is not None and np.issubdtype(dt, np.integer):
                v[v == np.iinfo(dt).max] = np.nan
            cols[name] = v
        return cls(slow, cols, meta if isinstance(meta, dict) else {})


@dataclass
class ReplayResult:
    name: str
    k: np.ndarray
    latency_s: np.ndarray
    miss: np.ndarray
    energy_j: float
    duration_s: float
    accuracy: float
    rejected: dict

    @property
    def miss_rate(self) -> float:
        return float(self.miss.mean())

    @property
    def mean_k(self) -> float:
        return float(self.k.mean())

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.duration_s


def _nan_none(v: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def body_and_delay(trace: LoadTrace, window: int = 51) -> tuple[np.ndarray, np.ndarray]:
    """Split each recorded step into a body slowdown b_t = min(s_t, the centred rolling median of s
    over `window` steps) and the rest as a fixed delay d_t = (s_t - b_t) · lat(K recorded) in seconds:
    a preemption costs the same time at every K, a cache / bandwidth slowdown scales with the step."""
    from numpy.lib.stride_tricks import sliding_window_view
    if not (isinstance(window, int) and window >= 1 and window % 2 == 1):
        raise ProfileError(f"window must be an odd integer >= 1, got {window!r}")
    s = trace.slowdown
    ks, lat = trace.profile_latency or ([], [])
    lat_of = dict(zip(ks, lat))
    k = trace.recorded_k()
    pad = window // 2
    b = np.minimum(s, np.median(sliding_window_view(np.pad(s, pad, mode="edge"), window), axis=1))
    return b, (s - b) * np.array([lat_of[int(x)] for x in k])


def _model(trace: LoadTrace, model: str):
    if model not in REPLAY_MODELS:
        raise ProfileError(f"replay model must be one of {REPLAY_MODELS}, got {model!r}")
    if model == "delay":
        return body_and_delay(trace)
    return trace.slowdown, np.zeros(len(trace))


def replay(trace: LoadTrace, controller, profile, *, deadline_s: float, period_s: float,
           idle_w: float = 2.0, dyn_w: float = 3.0, clock: FakeClock | None = None, name: str = "",
           model: str = "multiplicative") -> ReplayResult:
    """Run `controller` against `trace` (see module docstring). `clock`: the FakeClock that any
    StaleGuard inside the controller reads; it is advanced by `period_s` every step. `model`: how a
    recorded step carries over to another K ("multiplicative" or "delay")."""
    if profile.latency_s is None:
        raise ProfileError("replay needs a profile with a latency_s column")
    n = len(trace)
    s, delay = _model(trace, model)
    cpu, psi, runq = trace.col("cpu_util"), trace.col("psi_some_frac"), trace.col("run_queue")
    lat_k = profile.latency_s
    acc_k = profile.accuracy
    ks = np.empty(n, dtype=np.int64)
    lat = np.empty(n)
    controller.reset()
    tel = Telemetry()
    energy = 0.0
    for t in range(n):
        if clock is not None:
            clock.advance(period_s)
        k = int(controller.update(tel, None))
        controller.notify(k)
        k = min(max(k, 1), profile.k_max)
        ks[t] = k
        lat[t] = lat_k[k - 1] * s[t] + delay[t]
        energy += idle_w * period_s + dyn_w * lat[t]
        tel = Telemetry(t_s=(t + 1) * period_s, k=k, latency_s=float(lat[t]), deadline_s=deadline_s,
                        dt_s=period_s, cpu_util=_nan_none(cpu[t]), psi_some_frac=_nan_none(psi[t]),
                        run_queue=_nan_none(runq[t]), energy_j=energy,
                        power_w=idle_w + dyn_w * float(lat[t]) / period_s)
    miss = lat > deadline_s
    acc = float(np.mean(acc_k[ks - 1])) if acc_k is not None else float("nan")
    return ReplayResult(name or getattr(controller, "name", "controller"), ks, lat, miss, energy, n * period_s,
                        acc, dict(getattr(controller, "rejected", {}) or {}))


def _lat_matrix(slowdown, lat, delay_s):
    m = np.asarray(slowdown)[:, None] * lat[None, :]
    return m if delay_s is None else m + np.asarray(delay_s)[:, None]


def oracle(slowdown: np.ndarray, profile, deadline_s: float, k_min: int = 1, delay_s: np.ndarray | None = None):
    """Clairvoyant K per step: knowing s_t (and the delay d_t of the "delay" model) in advance, among
    the K with s_t·lat(K) + d_t <= deadline the one of highest expected accuracy (the smallest on
    ties), else k_min (a miss no K avoids). Returns (K array, miss rate, mean expected accuracy)."""
    lat = np.asarray(profile.latency_s[k_min - 1:])
    acc = np.asarray(profile.accuracy[k_min - 1:], dtype=float)
    fits = _lat_matrix(slowdown, lat, delay_s) <= deadline_s
    any_fit = fits.any(1)
    score = np.where(fits, acc[None, :], -np.inf)
    k = np.where(any_fit, k_min + np.argmax(score, 1), k_min)
    return k, float(1 - any_fit.mean()), float(profile.accuracy[k - 1].mean())


def energy_oracle(slowdown: np.ndarray, profile, power_w: float, *, period_s: float, idle_w: float, dyn_w: float,
                  k_min: int = 1, iters: int = 60, delay_s: np.ndarray | None = None):
    """The clairvoyant schedule of highest mean expected accuracy whose mean power is at most
    `power_w`: K_t = argmax acc(K) - λ·dyn_w·lat(K)·s_t, λ found by bisection (a Lagrangian
    relaxation of the knapsack, exact up to one step at the boundary). Returns (K, accuracy, power)."""
    lat = np.asarray(profile.latency_s[k_min - 1:])
    acc = np.asarray(profile.accuracy[k_min - 1:], dtype=float)
    e = dyn_w * _lat_matrix(slowdown, lat, delay_s)                    # (T, K) dynamic J per step

    def pick(lam):
        k = np.argmax(acc[None, :] - lam * e, 1)
        return k, idle_w + e[np.arange(len(k)), k].sum() / (len(k) * period_s)
    k, p = pick(0.0)
    if p <= power_w:
        return k + k_min, float(acc[k].mean()), float(p)
    lo, hi = 0.0, 1.0
    while pick(hi)[1] > power_w and hi < 1e30:
        hi *= 10
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if pick(mid)[1] > power_w:
            lo = mid
        else:
            hi = mid
    k, p = pick(hi)
    return k + k_min, float(acc[k].mean()), float(p)


def level_oracle(slowdown: np.ndarray, level: np.ndarray, profile, deadline_s: float, max_miss_rate: float,
                 k_min: int = 1, delay_s: np.ndarray | None = None):
    """An upper bound for controllers that know the load *level* in advance but not each step's
    slowdown: one fixed K per level, the combination of highest mean expected accuracy whose miss
    rate is at most `max_miss_rate` (exhaustive over K per level, at most 3 levels).
    Returns ({level: K}, miss rate, accuracy), or (None, nan, nan) when nothing fits."""
    import itertools
    lat = np.asarray(profile.latency_s[k_min - 1:])
    acc = np.asarray(profile.accuracy[k_min - 1:], dtype=float)
    level = np.nan_to_num(np.asarray(level, dtype=float), nan=0.0).astype(int)
    levels = sorted(set(level.tolist()))
    if len(levels) > 3:
        raise ProfileError(f"level_oracle handles at most 3 load levels, got {levels}")
    n = len(slowdown)
    full = _lat_matrix(slowdown, lat, delay_s) > deadline_s
    miss = {l: full[level == l].sum(0) for l in levels}                                             # (K,)
    cnt = {l: int((level == l).sum()) for l in levels}
    best = (None, float("nan"), -1.0)
    for combo in itertools.product(range(len(lat)), repeat=len(levels)):
        m = sum(miss[l][k] for l, k in zip(levels, combo)) / n
        if m > max_miss_rate:
            continue
        a = sum(cnt[l] * acc[k] for l, k in zip(levels, combo)) / n
        if a > best[2]:
            best = ({l: k + k_min for l, k in zip(levels, combo)}, float(m), float(a))
    return best if best[0] is not None else (None, float("nan"), float("nan"))
