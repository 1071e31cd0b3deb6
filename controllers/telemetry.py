"""Telemetry: one record type and the sources that fill it.

Every source answers "unavailable" instead of crashing: `read()` returns None (or None fields) and
`reason` says why (file missing, permission denied since kernel 5.10 for RAPL, no such sensor).
Energy sources share the firmware bridge's power-monitor interface,

    read() -> {"energy_j": cumulative J, "power_w": W | None, "time_s": s} | None

so `firmware_bridge.adapters.SerialPowerMonitor` plugs in unchanged beside `RaplReader`,
`HwmonPowerReader` and `PowerModel`.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import time
from dataclasses import dataclass, fields

from . import _check
from .errors import ControlConfigError

log = logging.getLogger(__name__)

__all__ = ["Telemetry", "LatencyMeter", "CpuMonitor", "RaplReader", "HwmonPowerReader", "PowerModel",
           "open_energy_source"]


@dataclass(frozen=True)
class Telemetry:
    """What the controller sees after a step. Every field defaults to None: "not measured"."""
    t_s: float | None = None            # monotonic time of the measurement (clock of the runner)
    k: int | None = None                # budget the measured step ran at
    latency_s: float | None = None      # wall time of the last engine step (perf_counter_ns)
    deadline_s: float | None = None    # the step's deadline; slack = deadline - latency
    dt_s: float | None = None           # time since the previous step
    cpu_util: float | None = None       # system CPU utilisation in [0, 1]
    cpu_freq_hz: float | None = None
    psi_some_avg10: float | None = None  # % of time some task stalled on CPU (/proc/pressure/cpu)
    psi_some_frac: float | None = None  # fraction of the last interval some task stalled (PSI total delta)
    run_queue: float | None = None      # runnable tasks system-wide (/proc/stat procs_running)
    power_w: float | None = None
    energy_j: float | None = None       # cumulative energy counter (J)

    @property
    def slack_s(self) -> float | None:
        if self.latency_s is None or self.deadline_s is None:
            return None
        return self.deadline_s - self.latency_s

    @property
    def overrun(self) -> bool | None:
        s = self.slack_s
        return None if s is None else s < 0

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self) if f.name != "t_s")


class LatencyMeter:
    """Times engine steps with perf_counter_ns and counts deadline overruns.

        m.start(); eng.step(x, K); lat = m.stop()   # seconds
    """

    def __init__(self, deadline_s: float | None = None, *, timer_ns=time.perf_counter_ns):
        self.deadline_s = _check.number("deadline_s", deadline_s, lo=0, lo_open=True, allow_none=True)
        self._timer = timer_ns
        self._t0 = None
        self.steps = 0
        self.overruns = 0
        self.last_s: float | None = None
        self.worst_slack_s: float | None = None

    def start(self) -> None:
        self._t0 = self._timer()

    def stop(self) -> float:
        if self._t0 is None:
            raise ControlConfigError("LatencyMeter.stop() called without start()")
        lat = (self._timer() - self._t0) * 1e-9
        self._t0 = None
        self.steps += 1
        self.last_s = lat
        if self.deadline_s is not None:
            slack = self.deadline_s - lat
            self.overruns += slack < 0
            self.worst_slack_s = slack if self.worst_slack_s is None else min(self.worst_slack_s, slack)
        return lat

    @property
    def miss_rate(self) -> float | None:
        return None if self.deadline_s is None or not self.steps else self.overruns / self.steps


def _finite(v: float, lo: float = 0.0, hi: float = math.inf) -> float | None:
    """v if it is a finite number in [lo, hi], else None (unavailable, never a number)."""
    return v if math.isfinite(v) and lo <= v <= hi else None


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


class CpuMonitor:
    """CPU utilisation (/proc/stat deltas), frequency (cpufreq sysfs, else /proc/cpuinfo, else psutil)
    and pressure stall information (/proc/pressure/cpu). Roots are injectable for fake trees.

    `read()` -> {"cpu_util", "cpu_freq_hz", "psi_some_avg10"}, each None when unavailable; files are
    read at most every `min_interval_s` (cached in between) so calling it every step is cheap.
    `cpus`: restrict utilisation and frequency to these CPU numbers (e.g. the engine's core).
    Also `run_queue` (procs_running in /proc/stat) and `psi_some_frac` (fraction of the interval
    since the last read in which some task stalled on CPU, from the PSI `total=` µs counter): the
    fast leading indicators of co-running load (avg10 is a 10 s average).
    """
    FIELDS = ("cpu_util", "cpu_freq_hz", "psi_some_avg10", "psi_some_frac", "run_queue")

    def __init__(self, *, proc_root: str = "/proc", sys_root: str = "/sys", cpus=None,
                 min_interval_s: float = 0.05, clock=None):
        self.proc_root, self.sys_root = proc_root, sys_root
        self.cpus = None if cpus is None else sorted(_check.integer("cpus[]", c, lo=0) for c in cpus)
        self.min_interval_s = _check.number("min_interval_s", min_interval_s, lo=0)
        self.clock = _check.clock_like("clock", clock)
        self._prev: dict[str, tuple[int, int]] | None = None
        self._last_t: float | None = None
        self._cached = dict.fromkeys(self.FIELDS)
        self.reason: dict[str, str] = {}
        self._runq: float | None = None
        self._psi_prev: tuple[float, float] | None = None     # (time s, total µs)

    def _stat(self) -> dict[str, tuple[int, int]] | None:
        text = _read_text(os.path.join(self.proc_root, "stat"))
        if text is None:
            self.reason["cpu_util"] = "no /proc/stat"
            return None
        out = {}
        for line in text.splitlines():
            if line.startswith("procs_running"):
                parts = line.split()
                self._runq = float(parts[1]) if len(parts) == 2 and parts[1].isdigit() else None
                continue
            if not line.startswith("cpu"):
                continue
            name, *vals = line.split()
            if len(vals) < 4:                         # a short line (issue #11, item 13): unavailable
                self.reason["cpu_util"] = f"/proc/stat line {name!r} has {len(vals)} fields, need >= 4"
                continue
            try:
                v = [int(x) for x in vals[:8]]
            except ValueError:
                continue
            if any(x < 0 for x in v):
                continue
            idle = v[3] + (v[4] if len(v) > 4 else 0)    # idle + iowait
            out[name] = (sum(v), idle)
        return out

    def _util(self) -> float | None:
        cur = self._stat()
        if cur is None:
            return None
        prev, self._prev = self._prev, cur
        if prev is None:
            return None
        names = ["cpu"] if self.cpus is None else [f"cpu{c}" for c in self.cpus]
        tot = idle = 0
        for n in names:
            if n in cur and n in prev:
                tot += cur[n][0] - prev[n][0]
                idle += cur[n][1] - prev[n][1]
        if tot <= 0:
            return self._cached["cpu_util"]     # no jiffies elapsed: keep the last value
        return min(1.0, max(0.0, 1.0 - idle / tot))

    def _freq(self) -> float | None:
        cpus = self.cpus
        if cpus is None:
            paths = glob.glob(os.path.join(self.sys_root, "devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))
        else:
            paths = [os.path.join(self.sys_root, f"devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq") for c in cpus]
        khz = [float(t) for t in (_read_text(p) for p in paths) if t and t.strip().isdigit() and 0 < int(t) < 1e8]
        if khz:
            return 1e3 * sum(khz) / len(khz)
        text = _read_text(os.path.join(self.proc_root, "cpuinfo"))
        mhz = []
        for line in (text or "").splitlines():
            if line.lower().startswith("cpu mhz"):
                try:
                    v = _finite(float(line.split(":")[1]), 1.0, 1e5)
                except (IndexError, ValueError):
                    v = None
                if v is not None:
                    mhz.append(v)
        if mhz:
            return 1e6 * sum(mhz) / len(mhz)
        self.reason["cpu_freq_hz"] = "no cpufreq sysfs and no 'cpu MHz' in /proc/cpuinfo"
        return None

    def _psi(self, now: float) -> tuple[float | None, float | None]:
        """(some avg10 %, some stall fraction since the last read)."""
        text = _read_text(os.path.join(self.proc_root, "pressure/cpu"))
        if text is None:
            self.reason["psi_some_avg10"] = "no /proc/pressure/cpu (kernel without CONFIG_PSI or psi=0)"
            return None, None
        avg10 = total = None
        for line in text.splitlines():
            if line.startswith("some"):
                for kv in line.split()[1:]:
                    k, _, v = kv.partition("=")
                    try:
                        if k == "avg10":
                            avg10 = _finite(float(v), 0.0, 100.0)
                        elif k == "total":
                            total = float(int(v))
                    except ValueError:
                        pass
        if avg10 is None:
            self.reason["psi_some_avg10"] = "unparseable /proc/pressure/cpu"
        frac = None
        if total is not None:
            prev, self._psi_prev = self._psi_prev, (now, total)
            if prev is not None and now > prev[0] and total >= prev[1]:
                frac = min(1.0, (total - prev[1]) * 1e-6 / (now - prev[0]))
        return avg10, frac

    def read(self) -> dict:
        now = self.clock.now()
        if self._last_t is not None and now - self._last_t < self.min_interval_s:
            return dict(self._cached)
        self._last_t = now
        util = self._util()
        avg10, frac = self._psi(now)
        self._cached = {"cpu_util": util, "cpu_freq_hz": self._freq(), "psi_some_avg10": avg10,
                        "psi_some_frac": frac, "run_queue": self._runq}
        return dict(self._cached)


class _CounterUnwrap:
    """A wrapping hardware counter (0 .. max_range) turned into a monotonic total."""

    def __init__(self, max_range: int | None):
        self.max_range = max_range
        self.last: int | None = None
        self.total = 0
        self.wraps = 0
        self.glitches = 0

    def update(self, raw: int, max_delta: float | None = None) -> int:
        """`max_delta`: the largest physically possible increase since the last read (counter
        units); a step back that would need more than that to be a wrap is a glitch, and so is a
        forward jump above it: both are skipped and counted in `glitches` (issue #11, item 10)."""
        if self.last is not None:
            d = raw - self.last
            if d < 0:
                if self.max_range and (max_delta is None or d + self.max_range <= max_delta):
                    d += self.max_range          # wrapped once (RAPL's max_energy_range_uj)
                    self.wraps += 1
                else:
                    # a small step back is a glitch, not a wrap (adding the range would book
                    # +262 kJ on a package); with the range unknown it is a reset: skip the sample
                    d = 0
                    self.glitches += 1
            elif max_delta is not None and d > max_delta:
                d = 0
                self.glitches += 1
            self.total += d
        self.last = raw
        return self.total


class RaplReader:
    """Linux RAPL powercap energy counters, summed over top-level zones (`intel-rapl:N`, package
    domains; subzones are inside them and would double count).

    `energy_uj` wraps at `max_energy_range_uj`: unwrapped here, which is correct as long as reads
    are less than one wrap period apart (minutes on a package). Since kernel 5.10 (CVE-2020-8694)
    energy_uj is readable by root only: then `available` is False and `reason` says so.
    `zones`: restrict to these zone directory names (e.g. ["intel-rapl:0"]).
    """

    def __init__(self, root: str = "/sys/class/powercap", *, zones=None, max_power_w: float = 1000.0, clock=None):
        self.root = root
        self.max_power_w = _check.number("max_power_w", max_power_w, lo=0, lo_open=True)
        self.clock = _check.clock_like("clock", clock)
        self.reason: str | None = None
        self._zones: list[tuple[str, _CounterUnwrap]] = []
        self._last: tuple[float, float] | None = None
        if not os.path.isdir(root):
            self.reason = f"no powercap directory {root} (no RAPL on this machine)"
            return
        names = sorted(n for n in os.listdir(root) if n.count(":") == 1 and os.path.isfile(os.path.join(root, n, "energy_uj")))
        if zones is not None:
            names = [n for n in names if n in set(zones)]
        if not names:
            self.reason = f"no RAPL zones with energy_uj under {root}"
            return
        for n in names:
            rng = _read_text(os.path.join(root, n, "max_energy_range_uj"))
            try:
                max_range = int(rng) if rng is not None else None
            except ValueError:
                max_range = None
            self._zones.append((n, _CounterUnwrap(max_range)))
        if self._raw() is None:
            self._zones = []

    @property
    def available(self) -> bool:
        return bool(self._zones)

    @property
    def glitches(self) -> int:
        """Counter readings skipped as implausible (a step back that is not a wrap, a jump)."""
        return sum(c.glitches for _, c in self._zones)

    @property
    def zones(self) -> list[str]:
        return [n for n, _ in self._zones]

    def _raw(self) -> list[int] | None:
        vals = []
        for n, _ in self._zones:
            p = os.path.join(self.root, n, "energy_uj")
            try:
                with open(p) as f:
                    v = int(f.read())
                if v < 0:
                    raise ValueError(f"negative counter {v}")
                vals.append(v)
            except PermissionError:
                self.reason = f"{p} is readable by root only (kernel >= 5.10); run as root or chmod it"
                return None
            except (OSError, ValueError) as e:
                self.reason = f"cannot read {p}: {e}"
                return None
        return vals

    def read(self) -> dict | None:
        if not self._zones:
            return None
        raw = self._raw()
        if raw is None:
            return None
        t = self.clock.now()
        max_uj = None if self._last is None else self.max_power_w * max(t - self._last[0], 1e-3) * 1e6
        e_j = sum(c.update(r, max_uj) for (_, c), r in zip(self._zones, raw)) * 1e-6
        power = None
        if self._last is not None and t > self._last[0]:
            power = (e_j - self._last[1]) / (t - self._last[0])
        self._last = (t, e_j)
        return {"energy_j": e_j, "power_w": power, "time_s": t}


class HwmonPowerReader:
    """hwmon power monitors: `power*_input` (µW), or voltage/current pairs `in{N}_input` (mV) ×
    `curr{N}_input` (mA), e.g. the Jetson INA3221 (name "ina3221"). Power is summed over the chosen
    channels and integrated into energy (trapezoid) between reads.

    `names`: only hwmon devices whose `name` file is one of these; `channels`: only these channel
    numbers. Channels whose label says "sum" (INA3221 sum channel) are skipped to avoid counting twice.
    """

    def __init__(self, root: str = "/sys/class/hwmon", *, names=None, channels=None, clock=None):
        self.root = root
        self.clock = _check.clock_like("clock", clock)
        self.reason: str | None = None
        self._sensors: list[tuple[str, str | None]] = []    # (power or voltage path, current path)
        self._last: tuple[float, float] | None = None
        self._energy_j = 0.0
        if not os.path.isdir(root):
            self.reason = f"no hwmon directory {root}"
            return
        for dev in sorted(os.listdir(root)):
            d = os.path.join(root, dev)
            name = (_read_text(os.path.join(d, "name")) or "").strip()
            if names is not None and name not in set(names):
                continue
            files = set(os.listdir(d)) if os.path.isdir(d) else set()
            for f in sorted(files):
                ch = None
                if f.startswith("power") and f.endswith("_input"):
                    ch, kind = f[5:-6], "power"
                elif f.startswith("in") and f.endswith("_input") and f"curr{f[2:-6]}_input" in files:
                    ch, kind = f[2:-6], "vi"
                if ch is None or not ch.isdigit():
                    continue
                if channels is not None and int(ch) not in set(channels):
                    continue
                label = (_read_text(os.path.join(d, f"{'power' if kind == 'power' else 'in'}{ch}_label")) or "").lower()
                if "sum" in label:
                    continue
                if kind == "power":
                    self._sensors.append((os.path.join(d, f), None))
                else:
                    self._sensors.append((os.path.join(d, f), os.path.join(d, f"curr{ch}_input")))
        if not self._sensors:
            self.reason = f"no hwmon power / voltage+current channels under {root}"

    @property
    def available(self) -> bool:
        return bool(self._sensors)

    MAX_CHANNEL_W = 10_000.0     # a reading above this (per channel) is a glitch, not a power

    def power_w(self) -> float | None:
        """Summed power in W, or None when any channel is missing, unparseable, non-finite,
        negative or above MAX_CHANNEL_W (issue #11, item 13: "inf", "1e30", "-5" are unavailable)."""
        total = 0.0
        for a, b in self._sensors:
            try:
                va = float(_read_text(a) or "nan")
                w = va * 1e-6 if b is None else va * 1e-3 * float(_read_text(b) or "nan") * 1e-3  # µW | mV × mA
            except ValueError:
                self.reason = f"unparseable reading in {a}"
                return None
            if not math.isfinite(w) or w < 0 or w > self.MAX_CHANNEL_W \
                    or (b is not None and va < 0):
                self.reason = f"implausible or missing reading in {a}"
                return None
            total += w
        return total

    def read(self) -> dict | None:
        if not self._sensors:
            return None
        p = self.power_w()
        if p is None:
            return None
        t = self.clock.now()
        if self._last is not None and t > self._last[0]:
            self._energy_j += 0.5 * (p + self._last[1]) * (t - self._last[0])
        self._last = (t, p)
        return {"energy_j": self._energy_j, "power_w": p, "time_s": t}


class PowerModel:
    """Calibrated power model where nothing can be read: P = idle_w + dyn_w × (engine busy fraction).

    The runner calls `on_step(k, latency_s)` after every step; energy = idle_w × elapsed +
    dyn_w × Σ step latency. Defaults are a plausible single Cortex-A/Atom-class core (2 W idle,
    +3 W busy); calibrate them against a power meter once (`fit_power_model`) and they transfer.
    """

    def __init__(self, *, idle_w: float = 2.0, dyn_w: float = 3.0, clock=None):
        self.idle_w = _check.number("idle_w", idle_w, lo=0)
        self.dyn_w = _check.number("dyn_w", dyn_w, lo=0)
        self.clock = _check.clock_like("clock", clock)
        self.reason = None
        self.available = True
        self._t0 = self.clock.now()
        self._busy_s = 0.0
        self._last: tuple[float, float] | None = None
        self.rejected = 0

    MAX_STEP_S = 3600.0

    def on_step(self, k: int, latency_s: float) -> None:
        """Add one step's busy time; a latency that is not a finite number in [0, MAX_STEP_S] is
        rejected (counted in `rejected`, issue #11 item 13) instead of poisoning the energy."""
        try:
            v = float(latency_s)
        except (TypeError, ValueError):
            v = math.nan
        if not (math.isfinite(v) and 0.0 <= v <= self.MAX_STEP_S):
            self.rejected += 1
            return
        self._busy_s += v

    def energy_per_step(self, latency_s: float) -> float:
        """Dynamic energy of one step of this latency (the idle part is paid whatever K is)."""
        v = _check.number("latency_s", latency_s, lo=0, hi=self.MAX_STEP_S)
        return self.dyn_w * v

    def read(self) -> dict:
        t = self.clock.now()
        e = self.idle_w * (t - self._t0) + self.dyn_w * self._busy_s
        p = None
        if self._last is not None and t > self._last[0]:
            p = (e - self._last[1]) / (t - self._last[0])
        self._last = (t, e)
        return {"energy_j": e, "power_w": p, "time_s": t}


def fit_power_model(samples) -> tuple[float, float]:
    """Least squares idle_w, dyn_w from (busy_fraction, measured_power_w) pairs."""
    import numpy as np
    a = np.asarray(samples, dtype=float)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 2:
        raise ControlConfigError("fit_power_model needs >= 2 (busy_fraction, power_w) pairs")
    A = np.stack([np.ones(len(a)), a[:, 0]], 1)
    idle, dyn = np.linalg.lstsq(A, a[:, 1], rcond=None)[0]
    return float(idle), float(dyn)


def open_energy_source(*, powercap_root: str = "/sys/class/powercap", hwmon_root: str = "/sys/class/hwmon",
                       serial_monitor=None, clock=None, **power_model_kwargs):
    """The best energy source here: serial monitor (if given) > RAPL > hwmon > PowerModel.
    Logs which one was chosen and why the better ones were not."""
    if serial_monitor is not None:
        log.info("energy: firmware bridge serial power monitor")
        return serial_monitor
    rapl = RaplReader(powercap_root, clock=clock)
    if rapl.available:
        log.info("energy: RAPL zones %s", rapl.zones)
        return rapl
    hw = HwmonPowerReader(hwmon_root, clock=clock)
    if hw.available:
        log.info("energy: hwmon power monitor")
        return hw
    log.info("energy: power model (RAPL: %s; hwmon: %s)", rapl.reason, hw.reason)
    return PowerModel(clock=clock, **power_model_kwargs)
