"""Adapters that plug a ``Link`` into a control runner as frame source, output sink and power monitor.

Interfaces (all the runner needs to know)::

    SerialFrameSource(link).read(timeout=None) -> np.ndarray | None   # float32 samples, 1-D
    SerialOutputSink(link).write(y, k=None) -> None                   # OUTPUT (+ BUDGET_REPORT when k changes)
    SerialPowerMonitor(link).read() -> dict | None                    # latest TELEMETRY, None if none/stale

None of them raises on a lost link: the source returns None, the sink drops the output and counts
it (``dropped``), the monitor returns None once telemetry is older than ``stale_after``.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import ConfigError, LinkError
from .link import Link
from .protocol import SEQ_NONE, BudgetReport, Output, OutputKind

log = logging.getLogger(__name__)


class SerialFrameSource:
    """Next sensor frame from the link as a 1-D float32 array (int16 samples are scaled).

    ``latest_only=True`` skips any backlog and returns the newest frame (skipped frames counted in
    ``skipped``); the default returns frames in order. ``last_seq`` is the seq of the frame returned
    last; ``SerialOutputSink`` uses it as the OUTPUT's ``ref_seq`` when built with ``source=``.
    """

    def __init__(self, link: Link, *, latest_only: bool = False):
        self.link = link
        self.latest_only = latest_only
        self.last_seq: int = SEQ_NONE
        self.last_timestamp_us: int = 0
        self.skipped = 0

    def read(self, timeout: float | None = None) -> np.ndarray | None:
        """Samples of the next frame, or None after ``timeout`` seconds / once the link is closed."""
        m = self.link.recv_sensor(timeout)
        if m is None:
            return None
        if self.latest_only:
            while (newer := self.link.sensor.get_nowait()) is not None:
                m = newer
                self.skipped += 1
        self.last_seq, self.last_timestamp_us = m.seq, m.timestamp_us
        return m.as_float32()


class SerialOutputSink:
    """Sends ``y`` as an OUTPUT message; with ``k`` also a BUDGET_REPORT whenever k changes."""

    def __init__(self, link: Link, *, kind: int = OutputKind.MODEL, source: SerialFrameSource | None = None):
        if kind not in tuple(OutputKind):
            raise ConfigError(f"kind={kind!r}, expected one of {[int(k) for k in OutputKind]}")
        self.link = link
        self.kind = int(kind)
        self.source = source
        self.sent = 0
        self.dropped = 0
        self._last_k: int | None = None

    def write(self, y: np.ndarray, k: int | None = None) -> None:
        """Send y (any shape, sent flattened as float32). Never raises on a lost link: counts ``dropped``."""
        ref = self.source.last_seq if self.source is not None else SEQ_NONE
        try:
            if k is not None and k != self._last_k:
                self.link.send(BudgetReport(k=int(k)))
                self._last_k = int(k)
            self.link.send(Output(values=np.asarray(y, dtype=np.float32).reshape(-1), kind=self.kind, ref_seq=ref))
            self.sent += 1
        except LinkError as e:
            self.dropped += 1
            log.debug("output dropped: %s", e)


class SerialPowerMonitor:
    """Latest TELEMETRY as ``{"power_w", "energy_j", "voltage_v", "current_a", "time_s"}``.

    ``time_s`` is the device's clock (header timestamp, unwrapped across the u32 µs wrap), the
    same clock the energy counter is integrated on, so ``Δenergy_j / Δtime_s`` is mean power.
    Also ``temperature_c`` and ``host_time_s`` (host clock at arrival). None before the first
    reading and when the latest is older than ``stale_after`` seconds (host clock).
    """

    def __init__(self, link: Link, *, stale_after: float = 1.0):
        if stale_after <= 0:
            raise ConfigError(f"stale_after={stale_after!r} must be > 0 seconds")
        self.link = link
        self.stale_after = stale_after
        self._last_raw_us: int | None = None
        self._wraps = 0

    def read(self) -> dict | None:
        latest = self.link.latest_telemetry
        if latest is None:
            return None
        host_t, m = latest
        if self.link.clock() - host_t > self.stale_after:
            return None
        if self._last_raw_us is not None and m.timestamp_us < self._last_raw_us - (1 << 31):
            self._wraps += 1  # u32 µs counter wrapped (every ~71.6 min)
        if self._last_raw_us is None or m.timestamp_us != self._last_raw_us:
            self._last_raw_us = m.timestamp_us
        t_us = (self._wraps << 32) + m.timestamp_us
        return {"power_w": float(m.power_w), "energy_j": m.energy_uj * 1e-6, "voltage_v": float(m.bus_voltage_v),
                "current_a": float(m.current_a), "time_s": t_us * 1e-6, "temperature_c": float(m.temperature_c),
                "host_time_s": host_t}
