"""The closed loop: pull a frame, ask the controller for K, step the engine, push the output, record.

Interfaces it needs (duck-typed; firmware_bridge adapters fit as they are):
    source.read(timeout=None) -> np.ndarray | None     None: no frame (yet); a source with
                                                        `exhausted = True` ends the run
    sink.write(y, k) -> None                            y is a copy, safe to keep
    power.read() -> {"energy_j", "power_w", "time_s"} | None   (+ optional on_step(k, latency_s))
    cpu.read() -> {"cpu_util", "cpu_freq_hz", "psi_some_avg10"}
    frontend(frame) -> x_t | None                       e.g. audio hop -> log-mel frame
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from . import _check
from .control import Controller
from .errors import ControlConfigError
from .telemetry import Telemetry

log = logging.getLogger(__name__)

__all__ = ["Runner", "Trace", "ArraySource", "RandomSource", "NullSink", "ListSink"]

TRACE_FIELDS = ("t_s", "k", "latency_s", "deadline_met", "power_w", "energy_j", "accuracy", "load",
                "cpu_util")


class ArraySource:
    """Frames from an array (T, d_in), optionally looping; `exhausted` once past the end."""

    def __init__(self, X: np.ndarray, *, loop: bool = False):
        X = np.asarray(X)
        if X.ndim != 2 or len(X) == 0:
            raise ControlConfigError(f"ArraySource needs a non-empty (T, d_in) array, got shape {X.shape}")
        self.X, self.loop, self.i, self.exhausted = X, loop, 0, False

    def read(self, timeout=None):
        if self.i >= len(self.X):
            if not self.loop:
                self.exhausted = True
                return None
            self.i = 0
        x = self.X[self.i]
        self.i += 1
        return x


class RandomSource:
    """Endless seeded Gaussian frames (simulation), from a preallocated pool."""

    def __init__(self, d_in: int, *, seed: int = 0, pool: int = 256, dtype=np.float32):
        d_in = _check.integer("d_in", d_in, lo=1)
        self.X = np.random.default_rng(seed).standard_normal((pool, d_in)).astype(dtype)
        self.i, self.exhausted = 0, False

    def read(self, timeout=None):
        self.i = (self.i + 1) % len(self.X)
        return self.X[self.i]


class NullSink:
    def write(self, y, k=None):
        pass


class ListSink:
    """Keeps every output (copies) and K."""

    def __init__(self):
        self.ys, self.ks = [], []

    def write(self, y, k=None):
        self.ys.append(np.array(y, copy=True))
        self.ks.append(k)


@dataclass
class Trace:
    """Columns of equal length, one row per step (see TRACE_FIELDS); NaN = not measured."""
    t_s: np.ndarray
    k: np.ndarray
    latency_s: np.ndarray
    deadline_met: np.ndarray
    power_w: np.ndarray
    energy_j: np.ndarray
    accuracy: np.ndarray
    load: np.ndarray
    cpu_util: np.ndarray
    deadline_s: float | None = None
    name: str = ""

    def __len__(self):
        return len(self.k)

    def summary(self) -> dict:
        n = len(self)
        e = self.energy_j[np.isfinite(self.energy_j)]
        dur = float(self.t_s[-1] - self.t_s[0]) if n > 1 else 0.0
        return {"steps": n, "miss_rate": float(1 - self.deadline_met.mean()) if n else float("nan"),
                "mean_k": float(self.k.mean()) if n else float("nan"),
                "accuracy": float(np.nanmean(self.accuracy)) if n and np.isfinite(self.accuracy).any() else float("nan"),
                "energy_j": float(e[-1] - e[0]) if len(e) > 1 else float("nan"),
                "mean_power_w": float((e[-1] - e[0]) / dur) if len(e) > 1 and dur > 0 else float("nan"),
                "p50_latency_s": float(np.median(self.latency_s)) if n else float("nan"),
                "p99_latency_s": float(np.percentile(self.latency_s, 99)) if n else float("nan")}

    def to_dict(self) -> dict:
        d = {f: getattr(self, f).tolist() for f in TRACE_FIELDS}
        d.update(deadline_s=self.deadline_s, name=self.name)
        return d

    def save_npz(self, path: str) -> None:
        np.savez_compressed(path, **{f: getattr(self, f) for f in TRACE_FIELDS},
                            deadline_s=np.nan if self.deadline_s is None else self.deadline_s)


class Runner:
    """Step `engine` on frames from `source` at the controller's K, at `period_s` (None: as fast
    as frames come), write outputs to `sink`, record a Trace.

    Telemetry given to the controller before step t is that of step t-1 (latency, slack, power,
    energy, CPU). `on_step(t_rel_s, step)` is called before each step (drives load schedules);
    `load_probe()` is recorded in the trace's `load` column. `profile` (a BudgetProfile) fills the
    accuracy proxy column. The clock is replaceable (FakeClock in tests); step latency is timed
    with `timer_ns` (perf_counter_ns).
    """

    def __init__(self, engine, controller: Controller, source, sink=None, *, period_s: float | None = None,
                 deadline_s: float | None = None, power=None, cpu=None, frontend=None, profile=None,
                 on_step=None, load_probe=None, clock=None, timer_ns=time.perf_counter_ns,
                 read_timeout_s: float = 0.1, name: str = ""):
        if not isinstance(controller, Controller):
            raise ControlConfigError(f"controller must be a controllers.Controller, got {type(controller).__name__}")
        if not callable(getattr(source, "read", None)):
            raise ControlConfigError("source needs a read(timeout) method")
        if sink is not None and not callable(getattr(sink, "write", None)):
            raise ControlConfigError("sink needs a write(y, k) method")
        if controller.k_max > engine.k_max:
            raise ControlConfigError(f"controller k_max={controller.k_max} exceeds the program's K̄={engine.k_max}")
        self.engine, self.controller, self.source = engine, controller, source
        self.sink = sink or NullSink()
        self.period_s = _check.number("period_s", period_s, lo=0, lo_open=True, allow_none=True)
        self.deadline_s = _check.number("deadline_s", deadline_s, lo=0, lo_open=True, allow_none=True)
        if self.deadline_s is None:
            self.deadline_s = self.period_s
        self.power, self.cpu, self.frontend, self.profile = power, cpu, frontend, profile
        self.on_step, self.load_probe = on_step, load_probe
        self.clock = _check.clock_like("clock", clock)
        self.timer_ns = timer_ns
        self.read_timeout_s = _check.number("read_timeout_s", read_timeout_s, lo=0)
        self.name = name or controller.name
        self._y = np.zeros(engine.d_out, dtype=engine.dtype)

    def run(self, *, steps: int | None = None, duration_s: float | None = None) -> Trace:
        steps = _check.integer("steps", steps, lo=0, allow_none=True)
        duration_s = _check.number("duration_s", duration_s, lo=0, allow_none=True)
        if steps is None and duration_s is None:
            raise ControlConfigError("run() needs steps= or duration_s= (the loop is bounded)")
        cap = steps if steps is not None else int(duration_s / (self.period_s or 1e-5)) + 16
        cols = {f: np.full(cap, np.nan) for f in TRACE_FIELDS}
        cols["k"] = np.zeros(cap, dtype=np.int64)
        cols["deadline_met"] = np.ones(cap, dtype=bool)
        eng, ctl, clock, timer = self.engine, self.controller, self.clock, self.timer_ns
        acc_table = self.profile.accuracy if self.profile is not None and self.profile.accuracy is not None else None
        dl = self.deadline_s
        has_on_step_power = callable(getattr(self.power, "on_step", None))
        tel = Telemetry()
        t0 = clock.now()
        next_t = t0
        t_prev = None
        n = 0
        while n < cap:
            now = clock.now()
            if duration_s is not None and now - t0 >= duration_s:
                break
            if self.period_s is not None:
                next_t += self.period_s
                wait = next_t - clock.now()
                if wait > 0:
                    clock.sleep(wait)
                elif wait < -self.period_s:
                    next_t = clock.now()           # fell more than a period behind: do not burst
            if self.on_step is not None:
                self.on_step(clock.now() - t0, n)
            frame = self.source.read(self.read_timeout_s)
            if frame is None:
                if getattr(self.source, "exhausted", False):
                    break
                continue
            x = self.frontend(frame) if self.frontend is not None else frame
            if x is None:
                continue
            if x.dtype != eng.dtype:
                x = x.astype(eng.dtype)
            k = ctl.update(tel, None)
            ctl.notify(k)
            t_start = timer()
            y = eng.step(x, k)
            lat = (timer() - t_start) * 1e-9
            self.sink.write(y.copy(), k)
            t_now = clock.now()
            if has_on_step_power:
                self.power.on_step(k, lat)
            pw = self.power.read() if self.power is not None else None
            cpu = self.cpu.read() if self.cpu is not None else {}
            tel = Telemetry(t_s=t_now, k=k, latency_s=lat, deadline_s=dl,
                            dt_s=None if t_prev is None else t_now - t_prev,
                            cpu_util=cpu.get("cpu_util"), cpu_freq_hz=cpu.get("cpu_freq_hz"),
                            psi_some_avg10=cpu.get("psi_some_avg10"),
                            power_w=None if pw is None else pw.get("power_w"),
                            energy_j=None if pw is None else pw.get("energy_j"))
            t_prev = t_now
            cols["t_s"][n] = t_now - t0
            cols["k"][n] = k
            cols["latency_s"][n] = lat
            cols["deadline_met"][n] = dl is None or lat <= dl
            if pw is not None:
                cols["power_w"][n] = np.nan if pw.get("power_w") is None else pw["power_w"]
                cols["energy_j"][n] = pw.get("energy_j", np.nan)
            if acc_table is not None:
                cols["accuracy"][n] = acc_table[k - 1]
            if self.load_probe is not None:
                cols["load"][n] = self.load_probe()
            if tel.cpu_util is not None:
                cols["cpu_util"][n] = tel.cpu_util
            n += 1
        return Trace(**{f: v[:n] for f, v in cols.items()}, deadline_s=dl, name=self.name)
