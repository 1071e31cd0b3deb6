"""KeywordSpotter: PCM chunks in, keyword detections out, at a fixed budget K or one a controller picks.

    spotter = KeywordSpotter()                      # the bundled model (essm_stream/assets)
    for chunk in source:                            # any chunk size, int16 or float PCM at 16 kHz
        for det in spotter.process(chunk):
            print(det.label, det.score, det.time_s) # time from the start of the stream

Per 10 ms hop: log-mel frame -> StreamEngine.step(frame, K) -> softmax of the pooled head ->
moving average over `smoothing_s` -> a keyword fires when its smoothed posterior reaches
`threshold`, no detection happened in the last `refractory_s`, and that keyword has re-armed (its
posterior fell below `rearm * threshold` since it last fired: one word, one detection).

With a controller, K is chosen before every hop by `controller.update(telemetry) -> K` from the
previous hop's measurements (latency, CPU time, K, an energy estimate, input level); without one,
K is fixed and a chunk's frames run in one engine call.

Input (`process`): 1-D (or (n, 1)) int16 PCM, or float32 / float64 PCM in [-1, 1]. Float PCM whose
peak exceeds 2.0 (6 dB over full scale) is refused with PCMScaleError: it is almost always int16 data
cast to float without dividing by 32768, which otherwise yields wrong keywords silently. NaN / Inf
samples, other dtypes and multi-channel arrays are refused too; a refused chunk leaves the spotter's
state as it was. Any chunk length is accepted; chunks are processed in slices of at most
`MAX_SLICE_SAMPLES`, so memory does not grow with the chunk.

Limits of the constructor's settings (ConfigError outside them): 0 < threshold <= 1,
0 <= smoothing_s <= 10 (the smoothing ring is allocated up front), 0 <= refractory_s <= 3600,
0 <= rearm <= 1, vad_margin_db in [0, 100] or None, 0 <= vad_hang_s <= 3600, idle_w and dyn_w
finite and >= 0; all finite. record=True keeps one trace row per 20 ms hop (≈ 1 MB per hour of audio).
background_compile=True starts at once: the engine's numba kernel compiles in a thread (or loads from
the cache) while its numpy reference kernel steps the same state (`StreamEngine(background_compile=)`).

Torch-free: numpy + numba (through the engine) only.
"""
from __future__ import annotations

import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, PCMScaleError, ShapeError, check_budget
from ..program import StreamProgram
from .frontend import FRONTEND_KINDS, make_frontend, pcm_to_float

ASSET_NAME = "kws_default.essm"
MAX_FLOAT_PEAK = 2.0            # float PCM beyond this peak is refused (int16 cast to float)
MAX_SLICE_SAMPLES = 1 << 16     # a longer chunk is processed in slices of this many samples
MAX_SMOOTHING_S = 10.0
MAX_HOLD_S = 3600.0             # refractory_s, vad_hang_s


def bundled_program_path() -> Path:
    """Path of the program shipped inside the package (essm_stream/assets/kws_default.essm)."""
    return Path(__file__).resolve().parent.parent / "assets" / ASSET_NAME


def load_program(program=None) -> StreamProgram:
    if program is None:
        p = bundled_program_path()
        if not p.is_file():
            raise ConfigError(f"the bundled keyword model {p} is missing: reinstall essm-stream, or build it "
                              "with `essm-stream kws-train --install`")
        return StreamProgram.load(p)
    if isinstance(program, StreamProgram):
        return program
    if isinstance(program, (str, os.PathLike)):
        return StreamProgram.load(program)
    raise ConfigError(f"program must be None (bundled), a path or a StreamProgram, got {type(program).__name__}")


@dataclass(frozen=True)
class Detection:
    label: str
    score: float          # smoothed posterior when it fired
    time_s: float         # seconds from the stream start to the end of the hop that fired


@dataclass
class HopTrace:
    """Per-hop record kept when KeywordSpotter(record=True) (for plots and summaries)."""
    time_s: list = field(default_factory=list)
    K: list = field(default_factory=list)
    cpu_s: list = field(default_factory=list)
    posterior: list = field(default_factory=list)   # (C,) smoothed posteriors per hop

    def arrays(self) -> dict:
        return {"time_s": np.asarray(self.time_s), "K": np.asarray(self.K, dtype=np.int64),
                "cpu_s": np.asarray(self.cpu_s), "posterior": np.asarray(self.posterior)}


class KeywordSpotter:
    """See the module docstring. Unknown keyword arguments raise TypeError (they are keyword-only)."""

    def __init__(self, program=None, *, K: int | None = None, controller=None, threshold: float | None = None,
                 smoothing_s: float | None = None, refractory_s: float | None = None, rearm: float = 0.5,
                 dtype=np.float32, record: bool = False, telemetry=None, idle_w: float = 0.0,
                 dyn_w: float = 3.0, energy_per_step=None, vad_margin_db: float | None = 6.0,
                 vad_hang_s: float = 1.0, background_compile: bool = False):
        self.program = load_program(program)
        fe = self.program.frontend
        if not isinstance(fe, dict) or fe.get("type") not in FRONTEND_KINDS or fe.get("mean") is None:
            raise ConfigError(f"this program has no keyword-spotting frontend (frontend slot of type {FRONTEND_KINDS} "
                              "with mean/std): build it with `essm-stream kws-train`")
        self.labels = tuple(fe.get("labels", ()))
        if len(self.labels) != self.program.d_out:
            raise ConfigError(f"the program's frontend lists {len(self.labels)} labels for {self.program.d_out} outputs")
        self.keyword_ids = np.array([i for i, l in enumerate(self.labels) if l not in ("unknown", "silence")])
        det = fe.get("detector", {})
        self.threshold = _check_range("threshold", det.get("threshold", 0.7) if threshold is None else threshold, 0, 1)
        if self.threshold == 0:
            raise ConfigError("threshold must be in (0, 1], got 0")
        self.smoothing_s = _check_range("smoothing_s", det.get("smoothing_s", 0.1) if smoothing_s is None
                                        else smoothing_s, 0.0, MAX_SMOOTHING_S)
        self.refractory_s = _check_range("refractory_s", det.get("refractory_s", 1.0) if refractory_s is None
                                         else refractory_s, 0.0, MAX_HOLD_S)
        self.rearm = _check_range("rearm", rearm, 0.0, 1.0)
        # Energy gate on detections: a keyword may fire only within vad_hang_s of a step whose input
        # level rose vad_margin_db above the running noise floor (no speech energy, no keyword).
        self.vad_margin_db = None if vad_margin_db is None else _check_range("vad_margin_db", vad_margin_db, 0.0, 100.0)
        self.vad_hang_s = _check_range("vad_hang_s", vad_hang_s, 0.0, MAX_HOLD_S)
        idle_w = _check_range("idle_w", idle_w, 0.0, np.inf)
        dyn_w = _check_range("dyn_w", dyn_w, 0.0, np.inf)
        self.frontend = make_frontend(fe, normalize=True)   # LogMel or SpeechEmbedding (kws/embed.py)
        self.stack = int(fe.get("stack", 1))             # frontend frames per model step
        if self.stack * self.frontend.n_mels != self.program.d_in:
            raise ConfigError(f"frontend gives {self.stack} x {self.frontend.n_mels} features per step, "
                              f"the model takes d_in={self.program.d_in}")
        from ..engine import StreamEngine
        # background_compile: the engine steps with its numpy reference kernel until the compiled one
        # is ready (StreamEngine); otherwise load/compile the kernel now, not inside the first timed step
        self.engine = StreamEngine(self.program, batch=1, dtype=dtype, background_compile=background_compile)
        if not background_compile:
            self.engine.warmup()
        self.k_max = self.program.k_max
        if K is None:
            K = self.k_max
        self.K = self._check_K(K)
        self.controller = controller
        if controller is not None and not callable(getattr(controller, "update", None)):
            raise ConfigError(f"controller must have update(telemetry) -> K, got {type(controller).__name__}")
        self._observe = getattr(controller, "observe_level", None)   # optional: input level per step
        self.telemetry = telemetry            # callable(spotter, hop info) -> telemetry object for the controller
        self.hop_s = self.stack * self.frontend.hop / self.frontend.sr   # seconds per model step
        self.n_smooth = max(1, int(round(self.smoothing_s / self.hop_s)))
        self.record = record
        self.idle_w, self.dyn_w = float(idle_w), float(dyn_w)
        # energy model: K -> joules per step (e.g. the MAC model a controller comes with), else measured
        self.energy_per_step = energy_per_step or getattr(controller, "energy_per_step", None)
        self._dtype = np.dtype(dtype)
        self.reset()

    def _check_K(self, K) -> int:
        return check_budget(K, self.k_max, "K")

    def reset(self) -> None:
        """Back to the start of a stream: frontend, engine, smoothing, refractory and time all reset."""
        self.frontend.reset()
        self.engine.reset()
        self._pending = np.zeros((0, self.frontend.n_mels), dtype=self._dtype)   # frames not yet stacked
        C = len(self.labels)
        self._ring = np.zeros((self.n_smooth, C))
        self._ring_sum = np.zeros(C)
        self._ring_pos = 0
        self._last_fire_t = -np.inf
        self._floor_db = None
        self._active_until = -np.inf
        self._armed = np.ones(C, dtype=bool)
        self.hops = 0
        self.last_cpu_s = 0.0
        self.last_latency_s = 0.0
        self.cpu_total_s = 0.0
        self.latency_total_s = 0.0
        self.model_energy_j = 0.0
        self.k_sum = 0
        self.trace = HopTrace() if self.record else None

    # -- per-hop pieces ----------------------------------------------------------------------
    def _posterior(self, y: np.ndarray) -> np.ndarray:
        z = y.astype(np.float64) - y.max()
        p = np.exp(z)
        return p / p.sum()

    def _decide(self, p: np.ndarray, t: float, out: list) -> np.ndarray:
        r = self._ring_pos
        self._ring_sum += p - self._ring[r]
        self._ring[r] = p
        self._ring_pos = (r + 1) % self.n_smooth
        n = min(self.hops + 1, self.n_smooth)
        ps = self._ring_sum / n
        self._armed |= ps < self.rearm * self.threshold
        kw = self.keyword_ids
        j = kw[int(np.argmax(ps[kw]))]
        if ps[j] >= self.threshold and self._armed[j] and t - self._last_fire_t >= self.refractory_s \
                and j == int(np.argmax(ps)) and t <= self._active_until:
            out.append(Detection(self.labels[j], float(ps[j]), round(t, 4)))
            self._last_fire_t = t
            self._armed[j] = False
        return ps

    def _vad(self, level_db: float, t: float) -> None:
        """Noise floor: follows the level down at once, up at 3 dB/s; speech = margin above it."""
        if self.vad_margin_db is None:
            self._active_until = np.inf
            return
        if self._floor_db is None or level_db < self._floor_db:
            self._floor_db = level_db
        else:
            self._floor_db += 3.0 * self.hop_s
        if level_db > self._floor_db + self.vad_margin_db:
            self._active_until = t + self.vad_hang_s

    def _hop_done(self, K: int, cpu: float, ps: np.ndarray, t: float) -> None:
        self.hops += 1
        self.latency_total_s += self.last_latency_s
        if self.energy_per_step is not None:
            self.model_energy_j += self.energy_per_step(K)
        self.k_sum += K
        self.cpu_total_s += cpu
        if self.trace is not None:
            self.trace.time_s.append(t)
            self.trace.K.append(K)
            self.trace.cpu_s.append(cpu)
            self.trace.posterior.append(ps.astype(np.float32))

    # -- public -------------------------------------------------------------------------------
    def process(self, pcm) -> list[Detection]:
        """Feed a chunk of 16 kHz mono PCM (int16, or float in [-1, 1]); return detections it completes.

        Raises PCMScaleError for float PCM peaking above MAX_FLOAT_PEAK (divide int16 data by 32768),
        ShapeError for NaN / Inf, other dtypes or shapes; the state is left as it was."""
        pcm = _check_pcm(pcm)
        if len(pcm) <= MAX_SLICE_SAMPLES:
            return self._process(pcm)
        out: list[Detection] = []
        for i in range(0, len(pcm), MAX_SLICE_SAMPLES):
            out += self._process(pcm[i:i + MAX_SLICE_SAMPLES])
        return out

    def _process(self, pcm) -> list[Detection]:
        F = self.frontend.process(pcm).astype(self._dtype, copy=False)   # (n, n_mels)
        levels = getattr(self.frontend, "last_levels_db", None) if self.stack == 1 else None
        if len(self._pending):
            F = np.concatenate([self._pending, F])
        m = len(F) // self.stack
        self._pending = F[m * self.stack:].copy()
        F = np.ascontiguousarray(F[: m * self.stack].reshape(m, self.stack * self.frontend.n_mels))
        out: list[Detection] = []
        if m == 0:
            return out
        # index of the last log-mel frame of model step i (its end time is when the step can run)
        last_frame = self.frontend.frames - len(self._pending) - m * self.stack + self.stack - 1
        if self.controller is None:
            t0, w0 = time.thread_time(), time.perf_counter()
            Y = self.engine.run(F, self.K)
            cpu = (time.thread_time() - t0) / m
            self.last_cpu_s, self.last_latency_s = cpu, (time.perf_counter() - w0) / m
            for i in range(m):
                t = self.frontend.frame_end_time(last_frame + i * self.stack)
                self._vad(self._level_db(F[i]) if levels is None else float(levels[i]), t)
                ps = self._decide(self._posterior(Y[i]), t, out)
                self._hop_done(self.K, cpu, ps, t)
            return out
        for i in range(m):
            t = self.frontend.frame_end_time(last_frame + i * self.stack)
            level = self._level_db(F[i]) if levels is None else float(levels[i])
            self._vad(level, t)
            if self._observe is not None:
                self._observe(level)
            self.K = self._check_K(self.controller.update(self._make_telemetry(t, F[i])))
            c0, w0 = time.thread_time(), time.perf_counter()
            y = self.engine.step(F[i], self.K)
            self.last_cpu_s, self.last_latency_s = time.thread_time() - c0, time.perf_counter() - w0
            ps = self._decide(self._posterior(y), t, out)
            self._hop_done(self.K, self.last_cpu_s, ps, t)
        return out

    def _level_db(self, x: np.ndarray) -> float:
        """Input level of a model step in dB (mean log-mel power of its frames, unnormalised)."""
        n = self.frontend.n_mels
        raw = x.reshape(self.stack, n).astype(np.float64) * self.frontend.std + self.frontend.mean
        return float(10.0 / np.log(10.0) * raw.mean())

    def _make_telemetry(self, t: float, frame: np.ndarray):
        if self.telemetry is not None:
            return self.telemetry(self, {"t": t, "frame": frame})
        return default_telemetry(self, t)

    @property
    def energy_j(self) -> float:
        """Modelled energy so far: idle_w x stream seconds + (energy_per_step(K) summed over steps, or
        else dyn_w x engine busy (wall) seconds)."""
        if self.energy_per_step is not None:
            return self.idle_w * self.hops * self.hop_s + self.model_energy_j
        return self.idle_w * self.hops * self.hop_s + self.dyn_w * self.latency_total_s

    @property
    def mean_K(self) -> float:
        return self.k_sum / max(1, self.hops)


def _check_range(name: str, v, lo: float, hi: float) -> float:
    """v (a real number, not a bool) as a finite float in [lo, hi], else ConfigError naming it."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {type(v).__name__} {v!r}")
    x = float(v)
    if not np.isfinite(x) or not lo <= x <= hi:
        raise ConfigError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {v!r}")
    return x


def _check_pcm(pcm) -> np.ndarray:
    """Mono PCM as an ndarray, checked before any state changes (the frontend checks dtype and NaN)."""
    try:
        a = np.asarray(pcm)
    except (ValueError, TypeError) as e:       # ragged lists and the like
        raise ShapeError(f"PCM must be a 1-D array of samples: {e}") from None
    if a.dtype.kind == "f" and a.size:
        x = pcm_to_float(a)                     # ShapeError for NaN / Inf / shape first
        peak = float(np.max(np.abs(x)))
        if peak > MAX_FLOAT_PEAK:
            raise PCMScaleError(
                f"float PCM must lie in [-1, 1], got a peak of {peak:g}; this looks like int16 samples cast to "
                f"float: pass the int16 array as is, or divide by 32768 (pcm.astype(np.float32) / 32768)")
        return x
    if a.size:
        pcm_to_float(a)                         # raises for a wrong dtype or shape
    elif a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim != 1:
        pcm_to_float(a)
    return a.reshape(-1) if a.ndim == 2 else a


def default_telemetry(spotter: "KeywordSpotter", t: float):
    """The previous step's measurements as a controllers.Telemetry (imported lazily; fields the
    spotter does not measure stay None). Energy is the spotter's model: idle_w x stream time +
    dyn_w x engine busy seconds (controllers.PowerModel's form, on the stream's clock)."""
    from controllers import Telemetry
    return Telemetry(t_s=t, k=spotter.K, latency_s=spotter.last_latency_s, deadline_s=spotter.hop_s,
                     dt_s=spotter.hop_s, energy_j=spotter.energy_j)
