"""A real, bounded co-running CPU load for experiments and tests.

`CpuLoad(core=0, max_workers=2, max_s=60)` starts `max_workers` spinner subprocesses pinned to
`core` (os.sched_setaffinity; kind "spin" = ALU busy loop, "memory" = 32 MiB memcpy loop
that also evicts the engine's weights from the caches), paused (SIGSTOP). `set_level(n)` lets n of them spin (SIGCONT) and
pauses the rest. Every spinner exits on its own after `max_s` seconds of wall time even if this
process dies, and `stop()` (or the context manager) kills them. Schedules map time -> level:
`step_schedule`, `burst_schedule`, `random_schedule`.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import numpy as np

from . import _check
from .errors import ControlConfigError

log = logging.getLogger(__name__)

_SPIN = ("import os,sys,time,tempfile\n"
         "c=int(sys.argv[1]);T=float(sys.argv[2]);kind=sys.argv[3]\n"
         "try: os.sched_setaffinity(0,{c}) if c>=0 else None\n"
         "except (AttributeError,OSError): pass\n"
         "end=time.monotonic()+T\n"
         "if kind=='memory':\n"
         "  a=bytearray(32<<20);b=bytearray(32<<20)\n"
         "  while time.monotonic()<end: b[:]=a\n"
         "elif kind=='pagecache':\n"
         "  blk=os.urandom(1<<20)\n"
         "  with tempfile.TemporaryFile() as f:\n"
         "    fd=f.fileno()\n"
         "    while time.monotonic()<end:\n"
         "      os.lseek(fd,0,0)\n"
         "      for _ in range(48): os.write(fd,blk)\n"
         "      os.fsync(fd)\n"
         "      os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)\n"
         "      os.lseek(fd,0,0)\n"
         "      while os.read(fd,1<<20): pass\n"
         "else:\n"
         "  while time.monotonic()<end:\n"
         "    for _ in range(20000): pass\n")
# spin: ALU busy loop; memory: 32 MiB memcpy loop (evicts caches); pagecache: write 48 MiB, fsync, drop
# it from the page cache, read it back (kernel I/O work and cache pollution)
KINDS = ("spin", "memory", "pagecache")


class CpuLoad:
    def __init__(self, *, core: int | None = 0, max_workers: int = 2, max_s: float = 60.0, kind: str = "spin",
                 nice: int = 0, script: str | None = None):
        """`nice`: the workers' nice level (0..19); `script`: Python source to run instead of the
        built-in loads, called as `python -c script CORE MAX_S KIND` (it must pin itself to CORE
        when >= 0 and exit after MAX_S seconds), e.g. a second engine stepping back to back."""
        if script is None and kind not in KINDS:
            raise ControlConfigError(f"kind={kind!r}, expected one of {KINDS} (spin: ALU busy loop; "
                                     "memory: 32 MiB memcpy loop that also evicts caches; pagecache: file "
                                     "write / fsync / drop / read loop)")
        if script is not None and not isinstance(script, str):
            raise ControlConfigError("script= must be Python source text")
        self.kind = kind
        self.nice = _check.integer("nice", nice, lo=0, hi=19)
        self.script = script
        self.core = _check.integer("core", core, lo=0, allow_none=True)
        self.max_workers = _check.integer("max_workers", max_workers, lo=1, hi=64)
        self.max_s = _check.number("max_s", max_s, lo=0, lo_open=True)
        self.level = 0
        self._procs: list[subprocess.Popen] = []

    def _child_setup(self) -> None:
        """In the worker, before exec: an ordinary (SCHED_OTHER) process at the chosen nice level,
        even when the caller runs real-time (a SCHED_FIFO spinner would take the core outright)."""
        try:
            if os.sched_getscheduler(0) != os.SCHED_OTHER:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except (AttributeError, OSError):
            pass
        if self.nice:
            os.nice(self.nice)

    def start(self) -> "CpuLoad":
        core = -1 if self.core is None else self.core
        for _ in range(self.max_workers):
            p = subprocess.Popen([sys.executable, "-c", self.script or _SPIN, str(core), str(self.max_s), self.kind],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 preexec_fn=self._child_setup)
            os.kill(p.pid, signal.SIGSTOP)
            self._procs.append(p)
        self.level = 0
        log.info("cpu load: %d spinners on core %s (bounded to %.0f s)", self.max_workers, self.core, self.max_s)
        return self

    def set_level(self, n: int) -> None:
        n = max(0, min(int(n), len(self._procs)))
        if n == self.level:
            return
        for i, p in enumerate(self._procs):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT if i < n else signal.SIGSTOP)
        self.level = n

    def stop(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("spinner %d did not exit", p.pid)
        self._procs = []
        self.level = 0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def step_schedule(t_on: float, t_off: float | None, level: int):
    """Load `level` from t_on to t_off (None: to the end)."""
    return lambda t: level if t >= t_on and (t_off is None or t < t_off) else 0


def burst_schedule(period_s: float, duty: float, level: int, t_start: float = 0.0):
    """Periodic bursts: `level` for duty·period at the start of every period after t_start."""
    return lambda t: level if t >= t_start and ((t - t_start) % period_s) < duty * period_s else 0


def random_schedule(duration_s: float, *, seed: int = 0, max_level: int = 2, mean_hold_s: float = 0.5):
    """Piecewise-constant random levels in 0..max_level with exponential holding times (seeded)."""
    rng = np.random.default_rng(seed)
    times, levels, t = [0.0], [0], 0.0
    while t < duration_s:
        t += float(rng.exponential(mean_hold_s))
        times.append(t)
        levels.append(int(rng.integers(0, max_level + 1)))
    times = np.array(times)

    def f(t):
        return levels[int(np.searchsorted(times, t, side="right")) - 1]
    return f
