"""Keyword validation shared by every constructor here (python-control habit)."""
from __future__ import annotations

import math
import numbers

from .errors import ControlConfigError


def number(name: str, v, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           allow_none: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ControlConfigError(f"{name} must be a finite number, got {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ControlConfigError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ControlConfigError(f"{name} must be <= {hi}, got {v}")
    return v


def integer(name: str, v, *, lo: int | None = None, hi: int | None = None, allow_none: bool = False) -> int | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ControlConfigError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    v = int(v)
    if lo is not None and v < lo:
        raise ControlConfigError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ControlConfigError(f"{name} must be <= {hi}, got {v}")
    return v


def k_range(k_min, k_max) -> tuple[int, int]:
    k_min = integer("k_min", k_min, lo=1)
    k_max = integer("k_max", k_max, lo=1)
    if k_min > k_max:
        raise ControlConfigError(f"k_min={k_min} must be <= k_max={k_max}")
    return k_min, k_max


def clock_like(name: str, clock):
    if clock is None:
        from .clock import DEFAULT_CLOCK
        return DEFAULT_CLOCK
    if not callable(getattr(clock, "now", None)):
        raise ControlConfigError(f"{name} must have a now() method (MonotonicClock, FakeClock), got {clock!r}")
    return clock
