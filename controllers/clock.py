"""Replaceable monotonic clocks (pyserial habit): everything that waits or times out takes one,
tests pass a FakeClock whose time only moves when told."""
from __future__ import annotations

import time


class MonotonicClock:
    """The real clock: `now()` is time.monotonic() seconds, `sleep(s)` really sleeps."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock for tests: `now()` returns the current fake time, `sleep` and `advance` move it."""

    def __init__(self, t0: float = 0.0):
        self.t = float(t0)

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds})")
        self.t += float(seconds)
        return self.t

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.t += float(seconds)


DEFAULT_CLOCK = MonotonicClock()
