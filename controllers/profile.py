"""Budget profile: expected accuracy, step latency and energy per step for every K.

Stored in a program's metadata as `budget_profile` (columns "K", "accuracy", "latency_s",
"energy_j", plus "latency_p99_s", "source", "device", "notes"). Accuracy comes from a sweep JSON
(`essm-stream sweep --json`, keys "K" and "acc") or, when none is given, from the documented
synthetic saturating curve `synthetic_accuracy`; latency from timing the engine at each K on this
machine (`calibrate_latency`); energy from a power reading or the power model.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import time

import numpy as np

from . import _check
from .errors import ProfileError

log = logging.getLogger(__name__)

PROFILE_KS = (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 28, 32)
# Synthetic saturating accuracy curve: acc(K) = A_INF - (A_INF - A_1) exp(-(K-1)/TAU). Its shape
# follows the paper's ES-SSM sweeps (steep below the collapse boundary, flat above the sweet spot):
# retention >= 90% from K=8, >= 98% from K=15 with these constants.
SYNTH_A_INF, SYNTH_A_1, SYNTH_TAU = 0.95, 0.40, 4.0


def synthetic_accuracy(ks, a_inf: float = SYNTH_A_INF, a_1: float = SYNTH_A_1, tau: float = SYNTH_TAU) -> list[float]:
    ks = np.asarray(ks, dtype=float)
    return [float(v) for v in a_inf - (a_inf - a_1) * np.exp(-(ks - 1.0) / tau)]


def load_sweep_json(path: str) -> tuple[list[int], list[float]]:
    """(K, acc) from a sweep JSON as written by `essm-stream sweep --json`."""
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError as e:
        raise ProfileError(f"cannot read sweep JSON {path!r}: {e}") from None
    except json.JSONDecodeError as e:
        raise ProfileError(f"{path!r} is not valid JSON: {e}") from None
    if not isinstance(d, dict) or "K" not in d or "acc" not in d:
        raise ProfileError(f"{path!r}: a sweep JSON needs keys 'K' and 'acc' (essm-stream sweep --json)")
    ks, acc = d["K"], d["acc"]
    if not isinstance(ks, list) or not isinstance(acc, list) or len(ks) != len(acc) or not ks:
        raise ProfileError(f"{path!r}: 'K' and 'acc' must be lists of the same non-zero length")
    try:
        ks = [int(k) for k in ks]
        acc = [float(a) for a in acc]
    except (TypeError, ValueError):
        raise ProfileError(f"{path!r}: 'K' must hold ints and 'acc' numbers") from None
    if not all(np.isfinite(acc)) or any(k < 1 for k in ks):
        raise ProfileError(f"{path!r}: accuracies must be finite and budgets >= 1")
    return ks, acc


def smallest_k_retaining(ks, acc, threshold: float) -> int | None:
    """Smallest K such that it and every larger K keep acc / acc(K_max) >= threshold (as `sweep`)."""
    full = acc[int(np.argmax(ks))]
    best = None
    for k, a in sorted(zip(ks, acc), reverse=True):
        if full <= 0 or a / full + 1e-12 < threshold:
            break
        best = k
    return best


class BudgetProfile:
    """Dense per-K tables (index K-1 for K = 1..k_max), interpolated linearly in K from the listed
    budgets (held constant outside them). Missing columns are None."""

    def __init__(self, ks, k_max: int, accuracy=None, latency_s=None, energy_j=None, extra: dict | None = None):
        self.k_max = _check.integer("k_max", k_max, lo=1)
        ks = [int(k) for k in ks]
        if not ks or len(set(ks)) != len(ks) or min(ks) < 1 or max(ks) > self.k_max:
            raise ProfileError(f"profile budgets {ks} must be distinct ints in [1, {self.k_max}]")
        self.ks = ks
        self.extra = dict(extra or {})
        self.columns = {}
        grid = np.arange(1, self.k_max + 1, dtype=float)
        order = np.argsort(ks)
        for name, col in (("accuracy", accuracy), ("latency_s", latency_s), ("energy_j", energy_j)):
            if col is None or all(v is None for v in col):
                self.columns[name] = None
                continue
            if len(col) != len(ks):
                raise ProfileError(f"profile column {name!r} has {len(col)} values for {len(ks)} budgets")
            pts = [(ks[i], col[i]) for i in order if col[i] is not None]
            x, y = zip(*pts)
            self.columns[name] = np.interp(grid, np.array(x, float), np.array(y, float))
        self.accuracy = self.columns["accuracy"]
        self.latency_s = self.columns["latency_s"]
        self.energy_j = self.columns["energy_j"]

    # -- lookups (K is 1-based) -----------------------------------------------------------
    def acc(self, k: int) -> float:
        return float(self.accuracy[int(k) - 1]) if self.accuracy is not None else float("nan")

    def lat(self, k: int) -> float:
        return float(self.latency_s[int(k) - 1]) if self.latency_s is not None else float("nan")

    def energy(self, k: int) -> float:
        return float(self.energy_j[int(k) - 1]) if self.energy_j is not None else float("nan")

    @property
    def collapse_boundary(self) -> int | None:
        """Smallest K keeping >= 90% of full accuracy, for it and every larger K (the paper's
        collapse boundary): the safety floor. None without an accuracy column."""
        if self.accuracy is None:
            return None
        return smallest_k_retaining(list(range(1, self.k_max + 1)), list(self.accuracy), 0.90)

    @property
    def sweet_spot(self) -> int | None:
        if self.accuracy is None:
            return None
        return smallest_k_retaining(list(range(1, self.k_max + 1)), list(self.accuracy), 0.98)

    # -- conversions ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, k_max: int) -> "BudgetProfile":
        if not isinstance(d, dict) or "K" not in d:
            raise ProfileError(f"a budget profile is a dict with a 'K' list, got {d!r:.80}")
        extra = {k: v for k, v in d.items() if k not in ("K", "accuracy", "latency_s", "energy_j")}
        return cls(d["K"], k_max, d.get("accuracy"), d.get("latency_s"), d.get("energy_j"), extra)

    @classmethod
    def from_program(cls, program) -> "BudgetProfile":
        if program.budget_profile is None:
            raise ProfileError("this program has no budget profile: run `essm-stream profile PROGRAM` first")
        return cls.from_dict(program.budget_profile, program.k_max)

    def to_dict(self) -> dict:
        """The listed budgets' values (as stored in program metadata)."""
        out = {"K": list(self.ks)}
        for name, col in self.columns.items():
            out[name] = None if col is None else [float(col[k - 1]) for k in self.ks]
        out.update(self.extra)
        return out


def _probe_frame(stepper, x, seed: int):
    """The frame to time with: `x` if given, else seeded Gaussian noise shaped from the stepper's
    `batch` / `d_in` / `dtype` attributes (a StreamEngine has them)."""
    if x is not None:
        return x
    d_in = getattr(stepper, "d_in", None)
    if d_in is None:
        raise ProfileError("calibrate_latency: pass x= (one input frame) for a stepper without a d_in attribute")
    batch = getattr(stepper, "batch", 1)
    shape = (batch, d_in) if batch and batch > 1 else (d_in,)
    return np.random.default_rng(seed).standard_normal(shape).astype(getattr(stepper, "dtype", np.float32))


def time_steps(stepper, ks, *, steps: int = 200, rounds: int = 4, x=None, seed: int = 0,
               period_s: float | None = None, warm_steps: int = 3, timer_ns=time.perf_counter_ns,
               sleep=time.sleep) -> dict[int, np.ndarray]:
    """Seconds per `stepper.step(x, K)` for every K: {K: array of `steps` samples}.

    `stepper` is any object with step(x, K) (a StreamEngine, a KeywordSpotter's engine, a C engine
    wrapper). The budgets are visited in `rounds` interleaved passes (forward, backward, ...) of
    steps/rounds steps each, so a slow drift of the machine spreads over every K instead of biasing
    one. When the stepper has snapshot() / restore() its state is restored afterwards; warmup() is
    called when it exists. With `period_s` the steps are paced as in a periodic control loop
    (sleeping in between leaves caches and clock colder: calibrate in the regime you run).
    """
    if not callable(getattr(stepper, "step", None)):
        raise ProfileError(f"calibrate_latency needs an object with step(x, K), got {type(stepper).__name__}")
    rounds = _check.integer("rounds", rounds, lo=1)
    steps = _check.integer("steps", steps, lo=rounds)
    period_s = _check.number("period_s", period_s, lo=0, lo_open=True, allow_none=True)
    k_max = getattr(stepper, "k_max", None)
    ks = [_check.integer("ks[]", k, lo=1) for k in ks]
    if k_max is not None:
        ks = [k for k in ks if k <= k_max]
    if not ks:
        raise ProfileError(f"no budget in ks is within [1, {k_max}]")
    x = _probe_frame(stepper, x, seed)
    snap = stepper.snapshot() if callable(getattr(stepper, "snapshot", None)) else None
    if callable(getattr(stepper, "warmup", None)):
        stepper.warmup()
    samples = {k: np.empty(0) for k in ks}
    per = max(1, steps // rounds)
    buf = np.empty(per)
    try:
        for r in range(rounds):
            for k in (ks if r % 2 == 0 else ks[::-1]):
                for _ in range(warm_steps):          # touch the weights of this K before timing
                    stepper.step(x, k)
                nxt = time.perf_counter()
                for i in range(per):
                    if period_s:
                        nxt += period_s
                        wait = nxt - time.perf_counter()
                        if wait > 0:
                            sleep(wait)
                    t0 = timer_ns()
                    stepper.step(x, k)
                    buf[i] = (timer_ns() - t0) * 1e-9
                samples[k] = np.concatenate([samples[k], buf])
    finally:
        if snap is not None:
            stepper.restore(snap)
    return samples


def calibrate_latency(stepper, ks=PROFILE_KS, *, steps: int = 200, rounds: int = 4, seed: int = 0,
                      period_s: float | None = None, x=None, timer_ns=time.perf_counter_ns) -> dict:
    """Median, mean and p99 step latency (seconds) per K of any object with step(x, K): the one
    per-K latency profiler of the project (see `time_steps` for how it samples).

    Returns {"K", "latency_s" (median, made non-decreasing in K so that noise never makes a larger
    K look cheaper to a controller), "latency_raw_s" (the medians as measured), "latency_mean_s",
    "latency_p99_s"}.
    """
    samples = time_steps(stepper, ks, steps=steps, rounds=rounds, x=x, seed=seed, period_s=period_s,
                         timer_ns=timer_ns)
    ks = list(samples)
    raw = [float(np.median(samples[k])) for k in ks]
    return {"K": ks, "latency_s": [float(v) for v in np.maximum.accumulate(raw)], "latency_raw_s": raw,
            "latency_mean_s": [float(np.mean(samples[k])) for k in ks],
            "latency_p99_s": [float(v) for v in np.maximum.accumulate([np.percentile(samples[k], 99) for k in ks])]}


def build_profile(stepper, *, sweep: str | None = None, ks=PROFILE_KS, steps: int = 200,
                  period_s: float | None = None, power_model=None, energy_source=None, x=None) -> dict:
    """Measure a budget profile for `stepper` (any object with step(x, K), e.g. a StreamEngine built
    from the program) on this machine (see module docstring).

    Energy per step: with `energy_source` (RAPL/hwmon/serial) the stepper is run for a while at each
    K and the counter's delta per step is taken; otherwise `power_model.energy_per_step(latency)`
    (default PowerModel()): dynamic energy, the idle part being paid whatever K is.
    """
    from .telemetry import PowerModel
    cal = calibrate_latency(stepper, ks, steps=steps, period_s=period_s, x=x)
    ks = cal["K"]
    if sweep is not None:
        sk, sa = load_sweep_json(sweep)
        acc = list(np.interp(ks, *zip(*sorted(zip(sk, sa)))))
        acc_source = f"sweep {os.path.basename(sweep)}"
    else:
        acc = synthetic_accuracy(ks)
        acc_source = (f"synthetic: {SYNTH_A_INF} - ({SYNTH_A_INF} - {SYNTH_A_1}) exp(-(K-1)/{SYNTH_TAU})")
    if energy_source is not None:
        energy = measure_energy_per_step(stepper, ks, energy_source, x=_probe_frame(stepper, x, 0))
        e_source = type(energy_source).__name__
    else:
        pm = power_model or PowerModel()
        energy = [pm.energy_per_step(lat) for lat in cal["latency_s"]]
        e_source = f"power model: {pm.dyn_w} W x step latency (+ {pm.idle_w} W idle, not per step)"
    dtype = getattr(stepper, "dtype", None)
    return {"K": ks, "accuracy": [float(a) for a in acc], "latency_s": cal["latency_s"],
            "latency_p99_s": cal["latency_p99_s"],
            "energy_j": [None if e is None else float(e) for e in energy],
            "source": {"accuracy": acc_source, "latency": f"median of {steps} steps per K" + (
                           f", paced at {period_s * 1e3:g} ms" if period_s else ", back to back"),
                       "energy": e_source},
            "device": {"machine": platform.machine(), "processor": platform.processor() or None,
                       "cpus": os.cpu_count(), "dtype": None if dtype is None else np.dtype(dtype).name,
                       "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}


def measure_energy_per_step(stepper, ks, source, *, x, seconds: float = 1.0) -> list[float | None]:
    """Energy per step at each K from a cumulative counter (read() -> {"energy_j", ...})."""
    engine = stepper
    out = []
    for k in ks:
        r0 = source.read()
        n, t_end = 0, time.monotonic() + seconds
        while time.monotonic() < t_end:
            engine.step(x, k)
            n += 1
        r1 = source.read()
        out.append(None if r0 is None or r1 is None or n == 0 else (r1["energy_j"] - r0["energy_j"]) / n)
    return out
