"""Budget controllers: `update(telemetry, dt=None) -> K`.

Every controller keeps the K it last returned in `.k`, validates its keyword arguments, and has
`reset()`. `notify(k_applied)` tells a controller which K was really applied (by a `MinOf` or a
guard above it) so that its integrator tracks it instead of winding up.

Composition: `MinOf([c1, c2, ...], floor=k_floor)` returns the minimum K any constraint allows,
never below the floor (e.g. the profile's collapse boundary); `StaleGuard(c, ...)` holds K when
telemetry stops, then goes to a safe K.

Bad telemetry (issue #11, item 12): a reading that is present but not a finite number in its
physical range (NaN, Inf, a negative latency, a string, a budget k outside [1, k_max], a NaN dt) is
*rejected*: counted in `rejected[field]`, never used, and the controller moves K one step toward
its safe end (k_min), never up. `update` never raises on telemetry values; it raises
ControlConfigError only when handed something that is not a Telemetry at all.
"""
from __future__ import annotations

import logging
import math
import numbers
from collections import deque
from statistics import NormalDist

import numpy as np

from . import _check
from .errors import ControlConfigError
from .telemetry import Telemetry

log = logging.getLogger(__name__)

__all__ = ["Controller", "FixedK", "LatencyController", "EnergyController", "PredictiveController", "TailController",
           "SlowdownKalman", "MinOf", "StaleGuard", "OndemandController"]


def _tel(t) -> Telemetry:
    if t is None:
        return Telemetry()
    if not isinstance(t, Telemetry):
        raise ControlConfigError(f"update() needs a controllers.Telemetry, got {type(t).__name__}")
    return t


_NORMAL = NormalDist()
BAD = object()          # a reading that is present but implausible (see _value)


def _value(v, lo: float = 0.0, hi: float = math.inf):
    """None (not measured), a float in [lo, hi], or BAD (present but not a finite number in range)."""
    if v is None:
        return None
    if isinstance(v, (bool, str, bytes)) or not isinstance(v, numbers.Real):
        return BAD
    try:
        v = float(v)
    except (TypeError, ValueError, OverflowError):
        return BAD
    if not math.isfinite(v) or v < lo or v > hi:
        return BAD
    return v


class Controller:
    """Base: holds k_min, k_max and the last output `k`."""
    name = "controller"

    def __init__(self, k_min: int = 1, k_max: int = 32, k_init: int | None = None):
        self.k_min, self.k_max = _check.k_range(k_min, k_max)
        self.k_init = _check.integer("k_init", k_init, lo=self.k_min, hi=self.k_max, allow_none=True)
        self.k = self.k_init if self.k_init is not None else self.k_max
        self.rejected: dict[str, int] = {}

    def _clip(self, k: float) -> int:
        return int(min(self.k_max, max(self.k_min, k)))

    def _reject(self, field: str) -> int:
        """Count a rejected reading and step K toward the safe end (never up)."""
        n = self.rejected.get(field, 0)
        if n == 0:
            log.warning("%s: rejected an implausible %s reading (counted in .rejected; K moves toward k_min)",
                        self.name, field)
        self.rejected[field] = n + 1
        self.k = max(self.k_min, min(self.k, self.k_max) - 1)
        return self.k

    def _k_ran(self, tel: Telemetry):
        """The budget the measured step ran at: tel.k if given, else our own K; BAD if out of range."""
        if tel.k is None:
            return self.k
        k = _value(tel.k, 1, self.k_max)
        if k is BAD or k != int(k):
            return BAD
        return int(k)

    def _step_latency(self, tel: Telemetry):
        """(latency_s, K it ran at) of the measured step; None when nothing was measured (hold);
        or the int K after rejecting an implausible reading (`_reject` has already moved K)."""
        latency = _value(tel.latency_s)
        if latency is None:
            return None
        k_ran = self._k_ran(tel)
        if latency is BAD or latency == 0.0:                # no step takes zero time
            return self._reject("latency_s")
        if k_ran is BAD:
            return self._reject("k")
        return latency, k_ran

    def _most_accurate(self, ok: np.ndarray, acc: np.ndarray) -> int:
        """The smallest K of highest accuracy among those with ok[K - k_min] (k_min if none is)."""
        idx = np.nonzero(ok)[0]
        if not len(idx):
            return self.k_min
        a = acc[idx]
        return self.k_min + int(idx[np.nonzero(a >= a.max() - 1e-12)[0][0]])

    def _dt_value(self, dt):
        return _value(dt, 0.0, 1e6)

    def update(self, telemetry: Telemetry | None = None, dt: float | None = None) -> int:
        raise NotImplementedError

    def notify(self, k_applied: int) -> None:
        """The K actually applied this step (may differ from ours under MinOf / guards)."""

    def reset(self) -> None:
        self.k = self.k_init if self.k_init is not None else self.k_max

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, k_min={self.k_min}, k_max={self.k_max})"


class FixedK(Controller):
    """Always the same K."""

    def __init__(self, k: int, *, k_max: int = 32):
        k = _check.integer("k", k, lo=1, hi=k_max)
        super().__init__(1, k_max, k)
        self.name = f"fixed K={k}"

    def update(self, telemetry=None, dt=None) -> int:
        return self.k


class _IntegerOutput:
    """Continuous command -> integer K with hysteresis and a minimum dwell between changes.

    K moves only when the command leaves the band k ± hysteresis, and not sooner than
    `dwell_steps` after the last change, except downwards when `urgent` (a real deadline miss):
    safety does not wait, comfort does.
    """

    def __init__(self, hysteresis: float, dwell_steps: int):
        self.hysteresis = _check.number("hysteresis", hysteresis, lo=0.5)
        self.dwell_steps = _check.integer("dwell_steps", dwell_steps, lo=0)
        self.since = 1 << 30

    def apply(self, k: int, u: float, k_min: int, k_max: int, urgent: bool = False) -> int:
        self.since += 1
        if abs(u - k) < self.hysteresis:
            return k
        new = int(min(k_max, max(k_min, math.floor(u + 0.5))))
        if new == k:
            return k
        if self.since < self.dwell_steps and not (urgent and new < k):
            return k
        self.since = 0
        return new

    def reset(self):
        self.since = 1 << 30


class LatencyController(Controller):
    """PI control of step latency against a deadline.

    Error (relative slack, clipped to [-1, 1] so one preemption spike cannot slam K to the floor):
        e = clip((setpoint·deadline - lat) / (setpoint·deadline), -1, 1)
    where lat is the `quantile` of the last `filter_window` step latencies, each capped at
    `spike_cap`·deadline (default the p75 of 8, i.e. the 2nd-largest: on a jittery CPU the tail, not the median, decides
    deadline misses, but one preemption spike that no K could have avoided must not hold the
    quantile up for a whole window; quantile=0.5 = median). Positional PI in K units,
    one update per step (dt in steps):
        u = I + kp·e,   I += ki·e·dt   (not while u is saturated and e pushes further: anti-windup)
    then integer K with hysteresis and a minimum dwell (K does not chatter); a real overrun may
    lower K at once. Gains default to fractions of the K range: kp = 0.25 (k_max - k_min),
    ki = 0.08 (k_max - k_min) per step, so that halving the latency headroom moves K by about a
    quarter of the range at once and the rest over ~10 steps.
    """
    name = "latency PI"

    def __init__(self, *, deadline_s: float, k_min: int = 1, k_max: int = 32, setpoint: float = 0.8,
                 kp: float | None = None, ki: float | None = None, hysteresis: float = 1.0,
                 dwell_steps: int = 3, filter_window: int = 8, quantile: float = 0.75,
                 spike_cap: float = 1.25,
                 k_init: int | None = None):
        super().__init__(k_min, k_max, k_init)
        self.deadline_s = _check.number("deadline_s", deadline_s, lo=0, lo_open=True)
        self.setpoint = _check.number("setpoint", setpoint, lo=0, lo_open=True, hi=1.0)
        span = max(1, self.k_max - self.k_min)
        self.kp = _check.number("kp", 0.25 * span if kp is None else kp, lo=0)
        self.ki = _check.number("ki", 0.08 * span if ki is None else ki, lo=0)
        self.filter_window = _check.integer("filter_window", filter_window, lo=1)
        self.quantile = _check.number("quantile", quantile, lo=0, hi=1)
        self.spike_cap = _check.number("spike_cap", spike_cap, lo=1.0)
        self._out = _IntegerOutput(hysteresis, dwell_steps)
        self.reset()

    @property
    def target_s(self) -> float:
        return self.setpoint * self.deadline_s

    def reset(self) -> None:
        super().reset()
        self.integral = float(self.k)
        self.u = float(self.k)
        self._lat = deque(maxlen=self.filter_window)
        self._lat_k = None
        self._out.reset()

    def update(self, telemetry=None, dt=None) -> int:
        tel = _tel(telemetry)
        latency = _value(tel.latency_s)
        if latency is None:
            return self.k                                   # nothing measured: hold
        if latency is BAD or latency == 0.0:                # no step takes zero time
            return self._reject("latency_s")
        dt = self._dt_value(dt)
        if dt is BAD:
            return self._reject("dt")
        dt = 1.0 if dt is None else dt
        self._lat.append(min(latency, self.spike_cap * self.deadline_s))
        lat = float(np.quantile(self._lat, self.quantile)) if len(self._lat) > 1 else latency
        target = self.target_s
        e = min(1.0, max(-1.0, (target - lat) / target))
        u = self.integral + self.kp * e
        saturated = (u >= self.k_max and e > 0) or (u <= self.k_min and e < 0)
        if not saturated:
            self.integral = min(self.k_max, max(self.k_min, self.integral + self.ki * e * dt))
        self.u = min(float(self.k_max), max(float(self.k_min), self.integral + self.kp * e))
        urgent = latency > self.deadline_s and lat > target
        self.k = self._out.apply(self.k, self.u, self.k_min, self.k_max, urgent)
        return self.k

    def notify(self, k_applied: int) -> None:
        # tracking anti-windup: never integrate far above what is really applied
        if k_applied < self.k:
            self.integral = min(self.integral, k_applied + 1.0)
            self.k = max(self.k_min, min(self.k, k_applied + 1))


class EnergyController(Controller):
    """Average-power (power_w=) or energy-per-mission (mission_j= over mission_s=) target with a
    token bucket.

    Tokens (J) fill at the target power and drain by the measured energy (from the cumulative
    `energy_j` counter); the bucket holds at most `bucket_s` seconds of target power, and the debt
    is bounded by the same amount (one glitch cannot create a debt never repaid), paid back over the
    same horizon. Each step picks the largest K whose predicted energy fits the allowance
    P·dt + tokens / (bucket_s / dt):
        predicted(K) = idle_w·dt + scale · profile.energy(K)
    `scale` tracks measured / profiled dynamic energy (EMA), so a slowed-down CPU (more energy per
    step) is seen. With a mission target the power target is re-planned every step as
    remaining energy / remaining time.

    Implausible readings (issue #11, item 10) are rejected and counted in `rejected`: a non-finite
    counter, a counter that goes down (a glitch, not a wrap: wraps are unwrapped by the readers), or
    an increase above `max_power_w`·dt. The step's energy is then taken as predicted and the counter
    re-based on the new reading, so a one-off jump is neither paid forever nor repeated.
    """
    name = "energy"

    def __init__(self, *, profile, power_w: float | None = None, mission_j: float | None = None,
                 mission_s: float | None = None, idle_w: float = 0.0, bucket_s: float = 0.5,
                 max_power_w: float = 1000.0, k_min: int = 1, k_max: int | None = None, ema: float = 0.05,
                 k_init: int | None = None):
        k_max = profile.k_max if k_max is None else k_max
        super().__init__(k_min, k_max, k_init)
        if profile.energy_j is None:
            raise ControlConfigError("EnergyController needs a profile with an 'energy_j' column")
        if (power_w is None) == (mission_j is None):
            raise ControlConfigError("give exactly one of power_w= (average power) or mission_j= (with mission_s=)")
        if mission_j is not None and mission_s is None:
            raise ControlConfigError("mission_j= needs mission_s= (the mission duration in seconds)")
        self.profile = profile
        self.power_w = _check.number("power_w", power_w, lo=0, lo_open=True, allow_none=True)
        self.mission_j = _check.number("mission_j", mission_j, lo=0, lo_open=True, allow_none=True)
        self.mission_s = _check.number("mission_s", mission_s, lo=0, lo_open=True, allow_none=True)
        self.idle_w = _check.number("idle_w", idle_w, lo=0)
        self.bucket_s = _check.number("bucket_s", bucket_s, lo=0, lo_open=True)
        self.max_power_w = _check.number("max_power_w", max_power_w, lo=0, lo_open=True)
        self.ema = _check.number("ema", ema, lo=0, lo_open=True, hi=1.0)
        self._e_k = np.array([profile.energy(k) for k in range(1, self.k_max + 1)])
        if not np.all(np.isfinite(self._e_k)) or np.any(self._e_k < 0):
            raise ControlConfigError("the profile's energy_j column must be finite and >= 0")
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.tokens = 0.0
        self.scale = 1.0
        self.spent_j = 0.0
        self.elapsed_s = 0.0
        self._last_e = None
        self._dt = None

    def target_power(self) -> float:
        if self.power_w is not None:
            return self.power_w
        left_s = self.mission_s - self.elapsed_s
        if left_s <= 0:
            return 0.0
        return max(0.0, (self.mission_j - self.spent_j) / left_s)

    def update(self, telemetry=None, dt=None) -> int:
        tel = _tel(telemetry)
        dt = self._dt_value(tel.dt_s if dt is None else dt)
        e_now = _value(tel.energy_j, -math.inf, math.inf)
        if dt is BAD:
            return self._reject("dt")
        if e_now is None or dt is None:
            return self.k
        if e_now is BAD:
            return self._reject("energy_j")
        k_used = self._k_ran(tel)
        if k_used is BAD:
            self._last_e = e_now
            return self._reject("k")
        p = self.target_power()
        rejected = False
        if self._last_e is not None:
            de = e_now - self._last_e
            predicted = self.idle_w * dt + self.scale * self._e_k[k_used - 1]
            if de < 0 or de > self.max_power_w * max(dt, 1e-6):
                rejected = True                   # a glitch: count the step as predicted, re-base
                de = predicted
            self.spent_j += de
            self.elapsed_s += dt
            cap = p * self.bucket_s
            self.tokens = min(max(self.tokens + p * dt - de, -cap), cap)
            dyn = de - self.idle_w * dt
            prof = self._e_k[k_used - 1]
            if not rejected and prof > 0 and dyn > 0:
                self.scale += self.ema * (min(dyn / prof, 100.0) - self.scale)
        self._last_e = e_now
        if dt > 0:
            self._dt = dt if self._dt is None else self._dt + 0.1 * (dt - self._dt)
        if rejected:
            return self._reject("energy_j")
        if self._dt is None:
            return self.k
        horizon = max(1.0, self.bucket_s / self._dt)
        allow = p * self._dt + self.tokens / horizon - self.idle_w * self._dt
        fits = np.nonzero(self.scale * self._e_k[self.k_min - 1:] <= allow)[0]
        self.k = self.k_min + int(fits[-1]) if len(fits) else self.k_min
        return self.k


def _check_latency_column(profile) -> None:
    lat = np.asarray(profile.latency_s, dtype=float)
    if not np.all(np.isfinite(lat)) or np.any(lat <= 0):
        raise ControlConfigError("the profile's latency_s column must be finite and > 0")


class SlowdownKalman:
    """Scalar Kalman filter on the slowdown s = measured latency / profiled latency (random walk).

    Innovations are clipped to `clip` standard deviations (a preemption spike moves s by a bounded
    amount) and the measurement noise R is re-estimated online from the innovations, so that
    `upper(z)` = s + z·sqrt(R) is a pessimistic slowdown under jitter.
    """

    def __init__(self, *, q: float = 1e-3, r: float = 0.01, clip: float = 3.0, r_ema: float = 0.02, s0: float = 1.0):
        self.q = _check.number("q", q, lo=0, lo_open=True)
        self.r0 = _check.number("r", r, lo=0, lo_open=True)
        self.clip = _check.number("clip", clip, lo=0, lo_open=True)
        self.r_ema = _check.number("r_ema", r_ema, lo=0, lo_open=True, hi=1)
        self.s0 = _check.number("s0", s0, lo=0, lo_open=True)
        self.reset()

    def reset(self):
        self.s, self.P, self.R = self.s0, 1.0, self.r0

    def update(self, z: float) -> float:
        if not math.isfinite(z):
            return self.s                      # callers reject bad readings; never poison the state
        self.P += self.q
        sd = math.sqrt(self.P + self.R)
        innov = min(self.clip * sd, max(-self.clip * sd, z - self.s))
        g = self.P / (self.P + self.R)
        self.s += g * innov
        self.P *= 1 - g
        self.R = max(1e-6, self.R + self.r_ema * (innov * innov - self.R))
        return self.s

    def upper(self, z: float = 1.0) -> float:
        return self.s + z * math.sqrt(self.R)


class PredictiveController(Controller):
    """Profile-based: the K maximising expected accuracy subject to predicted latency (and energy).

        predicted latency(K) = s_up · profile.lat(K) <= margin · deadline
        predicted energy(K)  = s_up · profile.energy(K) <= energy_j_per_step     (if given)
    where s_up = ŝ + z·sqrt(R) from a SlowdownKalman fed with measured / profiled latency of the
    K that ran. Among the feasible K the most accurate wins (ties: the smaller K); if none is
    feasible, k_min. Increases wait `dwell_steps` after a change; decreases do not.
    """
    name = "predictive"

    def __init__(self, *, profile, deadline_s: float, k_min: int = 1, k_max: int | None = None,
                 margin: float = 0.9, z: float = 2.0, energy_j_per_step: float | None = None,
                 dwell_steps: int = 5, kalman: SlowdownKalman | None = None, k_init: int | None = None):
        k_max = profile.k_max if k_max is None else k_max
        super().__init__(k_min, k_max, k_init)
        if profile.latency_s is None or profile.accuracy is None:
            raise ControlConfigError("PredictiveController needs a profile with 'latency_s' and 'accuracy'")
        if energy_j_per_step is not None and profile.energy_j is None:
            raise ControlConfigError("energy_j_per_step= needs a profile with an 'energy_j' column")
        _check_latency_column(profile)
        self.profile = profile
        self.deadline_s = _check.number("deadline_s", deadline_s, lo=0, lo_open=True)
        self.margin = _check.number("margin", margin, lo=0, lo_open=True, hi=1.0)
        self.z = _check.number("z", z, lo=0)
        self.energy_j_per_step = _check.number("energy_j_per_step", energy_j_per_step, lo=0, allow_none=True)
        self.dwell_steps = _check.integer("dwell_steps", dwell_steps, lo=0)
        self.kalman = kalman or SlowdownKalman()
        ks = np.arange(1, self.k_max + 1)
        self._lat = np.array([profile.lat(k) for k in ks])
        self._acc = np.array([profile.acc(k) for k in ks])
        self._en = None if profile.energy_j is None else np.array([profile.energy(k) for k in ks])
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.kalman.reset()
        self._since = 1 << 30

    def choose(self, s_up: float) -> int:
        lo = self.k_min - 1
        ok = s_up * self._lat[lo:] <= self.margin * self.deadline_s
        if self.energy_j_per_step is not None:
            ok &= s_up * self._en[lo:] <= self.energy_j_per_step
        return self._most_accurate(ok, self._acc[lo:])

    def update(self, telemetry=None, dt=None) -> int:
        tel = _tel(telemetry)
        self._since += 1
        reading = self._step_latency(tel)
        if reading is None:
            return self.k
        if isinstance(reading, int):
            return reading
        latency, k_ran = reading
        self.kalman.update(min(latency / self._lat[k_ran - 1], 1e6))
        new = self.choose(self.kalman.upper(self.z))
        if new < self.k or (new > self.k and self._since >= self.dwell_steps):
            self.k, self._since = new, 0
        return self.k

    def notify(self, k_applied: int) -> None:
        if k_applied < self.k:
            self.k = max(self.k_min, k_applied)


class MinOf(Controller):
    """The minimum K any constraint allows, never below `floor` (e.g. the collapse boundary).
    Every child is updated every step with the same telemetry, then told the applied K."""
    name = "min-of"

    def __init__(self, controllers, *, floor: int = 1, k_max: int | None = None):
        controllers = list(controllers)
        if not controllers or not all(isinstance(c, Controller) for c in controllers):
            raise ControlConfigError("MinOf needs a non-empty list of Controller instances")
        k_max = max(c.k_max for c in controllers) if k_max is None else k_max
        super().__init__(1, k_max)
        self.floor = _check.integer("floor", floor, lo=1, hi=self.k_max)
        self.controllers = controllers
        self.name = " & ".join(c.name for c in controllers) + (f", floor {self.floor}" if self.floor > 1 else "")
        self.k = max(self.floor, min(c.k for c in controllers))
        self.binding: Controller | None = None

    @classmethod
    def from_profile(cls, controllers, profile, **kw) -> "MinOf":
        """floor = the profile's collapse boundary (1 if it has no accuracy column)."""
        return cls(controllers, floor=profile.collapse_boundary or 1, **kw)

    def update(self, telemetry=None, dt=None) -> int:
        ks = [c.update(telemetry, dt) for c in self.controllers]
        i = int(np.argmin(ks))
        self.binding = self.controllers[i]
        self.k = max(self.floor, min(self.k_max, ks[i]))
        for c in self.controllers:
            c.notify(self.k)
        return self.k

    def notify(self, k_applied: int) -> None:
        for c in self.controllers:
            c.notify(k_applied)

    def reset(self) -> None:
        for c in self.controllers:
            c.reset()
        self.k = max(self.floor, min(c.k for c in self.controllers))


class StaleGuard(Controller):
    """Fallback when telemetry goes stale: hold the last K for `hold_s`, then go to `safe_k`.

    A record is *fresh* when every `require`d field holds a plausible value and it is a new record
    (not the same object again, and not the same `t_s` again). Age is measured on the guard's own
    clock since the last fresh record arrived: the records' timestamps are never compared with
    that clock, since they may come from another clock domain (time.time(), a device's uptime;
    issue #11, item 11). A record whose required field is present but implausible is passed to the
    inner controller, which counts it and moves K toward safe; it does not count as fresh.
    Entering and leaving the fallback is logged (warning / info).
    """

    def __init__(self, inner: Controller, *, hold_s: float = 0.1, safe_k: int = 1,
                 require=("latency_s",), clock=None):
        if not isinstance(inner, Controller):
            raise ControlConfigError(f"StaleGuard wraps a Controller, got {type(inner).__name__}")
        super().__init__(inner.k_min, inner.k_max, None)
        self.inner = inner
        self.hold_s = _check.number("hold_s", hold_s, lo=0)
        self.safe_k = _check.integer("safe_k", safe_k, lo=1, hi=inner.k_max)
        fields = set(Telemetry.__dataclass_fields__)
        self.require = tuple(require)
        bad = [f for f in self.require if f not in fields]
        if bad:
            raise ControlConfigError(f"require={bad} are not Telemetry fields ({sorted(fields)})")
        self.clock = _check.clock_like("clock", clock)
        self.name = inner.name
        self.reset()

    @property
    def rejected(self) -> dict:
        return self.inner.rejected

    @rejected.setter
    def rejected(self, value) -> None:       # the base class initialises it; the inner one counts
        pass

    def reset(self) -> None:
        self.inner.reset()
        self.k = self.inner.k
        self.last_fresh = self.clock.now()
        self.state = "ok"                  # ok | hold | safe
        self.fallbacks = 0
        self._last_tel = None
        self._last_t = None

    def update(self, telemetry=None, dt=None) -> int:
        tel = _tel(telemetry)
        now = self.clock.now()
        vals = [_value(getattr(tel, f), -math.inf, math.inf) for f in self.require]
        garbage = any(v is BAD for v in vals)
        t_s = _value(tel.t_s, -math.inf, math.inf)
        new = tel is not self._last_tel and (t_s is None or t_s is BAD or t_s != self._last_t)
        fresh = new and not garbage and all(v is not None for v in vals)
        self._last_tel = tel
        if t_s is not None and t_s is not BAD:
            self._last_t = t_s
        if fresh:
            self.last_fresh = now
        age = now - self.last_fresh
        if age > self.hold_s:
            if self.state != "safe":
                log.warning("telemetry stale: nothing fresh for %.3f s (> hold_s=%.3f): going to safe K=%d (%s)",
                            age, self.hold_s, self.safe_k, self.name)
                self.fallbacks += 1
            self.state = "safe"
            self.k = self.safe_k
        elif fresh:
            if self.state == "safe":
                log.info("telemetry back: leaving safe K=%d", self.safe_k)
            self.state = "ok"
            self.k = self.inner.update(tel, dt)
        elif garbage and new:
            self.state = "hold"            # implausible: the inner controller counts it and steps down
            self.k = min(self.k, self.inner.update(tel, dt))
        else:
            self.state = "hold"            # nothing new yet: hold the last K
        return self.k


class OndemandController(Controller):
    """The Linux ondemand governor's rule, with K's headroom as the "frequency": above
    `threshold` CPU utilisation jump straight to the maximum headroom (K = k_min); below, the
    headroom grows in proportion to utilisation, K = k_max - (k_max - k_min)·util/threshold.
    A baseline that reacts to load without measuring latency or knowing the model."""
    name = "ondemand"

    def __init__(self, *, threshold: float = 0.8, k_min: int = 1, k_max: int = 32, k_init: int | None = None):
        super().__init__(k_min, k_max, k_init)
        self.threshold = _check.number("threshold", threshold, lo=0, lo_open=True, hi=1.0)

    def update(self, telemetry=None, dt=None) -> int:
        tel = _tel(telemetry)
        u = _value(tel.cpu_util, 0.0, 1.0)
        if u is None:
            return self.k
        if u is BAD:
            return self._reject("cpu_util")
        if u > self.threshold:
            self.k = self.k_min
        else:
            self.k = self._clip(round(self.k_max - (self.k_max - self.k_min) * u / self.threshold))
        return self.k


class TailController(Controller):
    """Aims at the tail: the most accurate K whose predicted probability of missing the deadline
    stays under `miss_target` (issue #16), instead of holding a p75 or a mean under a setpoint.

    Model of the next step's latency at budget K:  lat(K) · s,   log s = m + r
      m  the slowdown state: an EWMA of log(measured / profiled latency), weight `level_up` when the
         slowdown rises (a load arrives at once) and `level_alpha` when it falls;
      r  the one-step-ahead residual, whose distribution is tracked online as a histogram with
         exponential forgetting (half-life `half_life_steps`), one per feed-forward context:
           0 calm, 1 pressure (PSI stall fraction >= psi_alarm or run queue >= runq_alarm),
           2 shock (the previous step overran, or its slowdown jumped by > `jump` over m).
    K is the most accurate K with  log lat(K) + m + q <= log deadline,  q the (1 - a) quantile of r
    in the current context (the alarm contexts never below the pooled quantile). Where a histogram
    holds fewer than `min_tail` steps beyond the quantile (a 99.9% quantile from a few thousand steps,
    early on, rare contexts) the tail is extrapolated as an exponential excess over the (1 - p0)
    quantile (peaks over threshold: a Pareto tail of the slowdown), not as a log-normal, whose thin
    tail under-covers the preemption spikes. Residuals of steps that even k_min would have missed are
    not used: no K avoids them (give k_min = the safety floor when the controller runs under one).
    `a` follows the realised avoidable misses (adaptive conformal inference, in log space): each
    such miss divides it by e, each step without one multiplies it by exp(target / (1 - target)),
    so the long-run rate of avoidable misses is held at `miss_target`.
    Decreases of K apply at once; increases wait `dwell_steps`. Bad readings are rejected (base class).
    """
    name = "tail"

    def __init__(self, *, profile, deadline_s: float, miss_target: float = 1e-3, k_min: int = 1,
                 k_max: int | None = None, level_alpha: float = 0.1, level_up: float | None = 0.3,
                 half_life_steps: float = 4000.0,
                 psi_alarm: float = 0.5, runq_alarm: float | None = None, jump: float = 1.5,
                 dwell_steps: int = 20, prior_q: float = 1.0, aci_step: float = 0.3, min_tail: float = 3.0,
                 tail_frac: float = 0.05, tail_min: float = 20.0, k_init: int | None = None):
        k_max = profile.k_max if k_max is None else k_max
        super().__init__(k_min, k_max, k_init)
        if profile.latency_s is None or profile.accuracy is None:
            raise ControlConfigError("TailController needs a profile with 'latency_s' and 'accuracy'")
        _check_latency_column(profile)
        self.profile = profile
        self.deadline_s = _check.number("deadline_s", deadline_s, lo=0, lo_open=True)
        self.miss_target = _check.number("miss_target", miss_target, lo=1e-6, hi=0.5)
        self.level_alpha = _check.number("level_alpha", level_alpha, lo=0, lo_open=True, hi=1.0)
        self.level_up = _check.number("level_up", level_alpha if level_up is None else level_up, lo=0,
                                      lo_open=True, hi=1.0)
        self.half_life_steps = _check.number("half_life_steps", half_life_steps, lo=10)
        self.psi_alarm = _check.number("psi_alarm", psi_alarm, lo=0, hi=1.0)
        self.runq_alarm = _check.number("runq_alarm", runq_alarm, lo=1, allow_none=True)
        self.jump = _check.number("jump", jump, lo=1.0)
        self.dwell_steps = _check.integer("dwell_steps", dwell_steps, lo=0)
        self.prior_q = _check.number("prior_q", prior_q, lo=0)
        self.aci_step = _check.number("aci_step", aci_step, lo=0)
        self.min_tail = _check.number("min_tail", min_tail, lo=1.0)
        self.tail_frac = _check.number("tail_frac", tail_frac, lo=0, lo_open=True, hi=0.5)
        self.tail_min = _check.number("tail_min", tail_min, lo=1.0)
        ks = np.arange(1, self.k_max + 1)
        self._loglat = np.log(np.array([profile.lat(k) for k in ks]))
        self._acc = np.array([profile.acc(k) for k in ks])
        self._edges = np.linspace(-3.0, 6.0, 361)            # residual bins of 0.025 in log slowdown
        self._centres = 0.5 * (self._edges[1:] + self._edges[:-1])
        self._decay = 0.5 ** (1.0 / self.half_life_steps)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.m = 0.0                                         # log slowdown state
        self.alpha = self.miss_target
        self._hist = np.zeros((3, len(self._edges) - 1))
        self._w = np.zeros(3)
        self._ctx = 0
        self._since = 1 << 30
        self.avoidable_misses = 0
        self.unavoidable = 0
        self.q = self.prior_q

    def _quantile(self, h: np.ndarray, w: float, a: float) -> float | None:
        """Upper (1 - a) quantile of the residual histogram h (total weight w). With at least
        `min_tail` steps beyond it, the empirical quantile. With fewer (a rare quantile, early on, a
        rare context) an exponential tail above a threshold, the peaks-over-threshold rule of extreme
        value statistics: u = the empirical (1 - p0) quantile, p0 = min(tail_frac, max(tail_min / w, a)),
        beta = the mean excess of the residuals above u, and q = u + beta·ln(p0 / a), i.e. a Pareto tail
        of the slowdown itself. From at least 30 steps; else None."""
        tail = np.cumsum(h[::-1])
        if w * a >= self.min_tail:
            i = int(np.searchsorted(tail, a * w))            # first bin from the top holding mass a·w
            return float(self._edges[len(h) - i])
        if w < 30:
            return None
        p0 = min(self.tail_frac, max(self.tail_min / w, a))
        u = float(self._edges[len(h) - int(np.searchsorted(tail, p0 * w))])
        above = self._centres > u
        n_ex = float(h[above].sum())
        if n_ex <= 0:
            return u
        beta = max(float(h[above] @ (self._centres[above] - u)) / n_ex, self._edges[1] - self._edges[0])
        return u + beta * math.log(max(p0 / a, 1.0))

    def _q(self, ctx: int) -> float:
        """The (1 - alpha) residual quantile for context `ctx`. Where a histogram has seen fewer than
        1/alpha steps, the largest residual it holds stands in (conservative, not extrapolated);
        before any data, prior_q."""
        pooled_h, pooled_w = self._hist.sum(0), self._w.sum()
        pooled = self._quantile(pooled_h, pooled_w, self.alpha)
        if pooled is None:
            pooled = self._top(pooled_h) if pooled_w > 0 else self.prior_q
        if ctx == 0:
            own = self._quantile(self._hist[0], self._w[0], self.alpha)
            return pooled if own is None else own
        own = self._quantile(self._hist[ctx], self._w[ctx], self.alpha)
        if own is None:
            own = self._top(self._hist[ctx]) if self._w[ctx] > 0 else pooled
        return max(own, pooled)

    def _top(self, h: np.ndarray) -> float:
        nz = np.nonzero(h > 1e-3)[0]
        return float(self._edges[nz[-1] + 1]) if len(nz) else self.prior_q

    def choose(self, m: float, q: float) -> int:
        lo = self.k_min - 1
        ok = self._loglat[lo:] + m + q <= math.log(self.deadline_s)
        return self._most_accurate(ok, self._acc[lo:])

    def update(self, telemetry=None, dt=None) -> int:
        tel = _tel(telemetry)
        self._since += 1
        reading = self._step_latency(tel)
        if reading is None:
            return self.k
        if isinstance(reading, int):
            return reading
        latency, k_ran = reading
        log_s = min(math.log(latency) - self._loglat[k_ran - 1], 12.0)
        overran = latency > self.deadline_s
        unavoidable = log_s + self._loglat[self.k_min - 1] > math.log(self.deadline_s)
        # 1. score the last prediction: residual into its context's histogram, ACI on misses
        r = log_s - self.m
        if unavoidable:
            self.unavoidable += 1
        else:
            b = min(max(int(np.searchsorted(self._edges, r) - 1), 0), len(self._edges) - 2)
            self._hist *= self._decay
            self._w *= self._decay
            self._hist[self._ctx, b] += 1.0
            self._w[self._ctx] += 1.0
        if overran and not unavoidable:
            self.avoidable_misses += 1
            self.alpha *= math.exp(-self.aci_step)
        else:
            self.alpha *= math.exp(self.aci_step * self.miss_target / (1 - self.miss_target))
        self.alpha = min(max(self.alpha, 1e-6), 0.5)
        # 2. feed-forward context of the next step, then the state update
        psi = _value(tel.psi_some_frac, 0.0, 1.0)
        runq = _value(tel.run_queue, 0.0, 1e6)
        if (overran and not unavoidable) or r > math.log(self.jump):
            self._ctx = 2
        elif (psi not in (None, BAD) and psi >= self.psi_alarm) or \
                (self.runq_alarm is not None and runq not in (None, BAD) and runq >= self.runq_alarm):
            self._ctx = 1
        else:
            self._ctx = 0
        if not unavoidable:                  # fast attack, slow release: a load arrives at once
            self.m += (self.level_up if log_s > self.m else self.level_alpha) * (log_s - self.m)
        self.q = self._q(self._ctx)
        new = self.choose(self.m, self.q)
        if new < self.k or (new > self.k and self._since >= self.dwell_steps):
            self.k, self._since = new, 0
        return self.k

    def notify(self, k_applied: int) -> None:
        if k_applied < self.k:
            self.k = max(self.k_min, k_applied)
