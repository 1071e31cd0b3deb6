"""controllers: closed-loop spectral-budget control for StreamEngine (torch-free).

A controller picks the budget K ∈ [1, K̄] before every engine step from telemetry of the last step:

    from controllers import LatencyController, Telemetry
    ctl = LatencyController(deadline_s=2e-4, k_min=1, k_max=32)
    K = ctl.update(Telemetry(latency_s=0.00012, k=32))

Interfaces (duck-typed; anything with these methods plugs in)
------------------------------------------------------------
Controller      update(telemetry: Telemetry, dt=None) -> int K;  reset();  notify(k_applied);  .k
Telemetry       frozen record, every field None = "not measured": t_s, k, latency_s, deadline_s,
                dt_s, cpu_util, cpu_freq_hz, psi_some_avg10, power_w, energy_j (+ slack_s, overrun)
Frame source    read(timeout=None) -> np.ndarray | None  (None: nothing yet; `exhausted` ends a run)
                e.g. firmware_bridge.adapters.SerialFrameSource, ArraySource, RandomSource, a KWS
                microphone source yielding audio hops with `frontend=` turning hops into log-mel frames
Output sink     write(y, k) -> None   (y is the runner's copy)   e.g. SerialOutputSink, ListSink
Energy source   read() -> {"energy_j": cumulative J, "power_w": W|None, "time_s": s} | None
                (+ optional on_step(k, latency_s)): RaplReader, HwmonPowerReader, PowerModel,
                firmware_bridge.adapters.SerialPowerMonitor
CPU source      read() -> {"cpu_util", "cpu_freq_hz", "psi_some_avg10"} (None where unavailable)
Clock           now() -> monotonic seconds, sleep(s): MonotonicClock, FakeClock (tests)

Controllers: FixedK, LatencyController (PI, anti-windup, hysteresis, dwell), EnergyController
(average power or energy per mission, token bucket), PredictiveController (max expected accuracy
under predicted latency/energy, slowdown tracked by SlowdownKalman), TailController (max expected
accuracy with P(miss) under a target: online quantiles of the slowdown's one-step-ahead residuals per
feed-forward context), OndemandController (baseline),
composed with MinOf(..., floor=collapse boundary) and guarded by StaleGuard (hold, then safe K).
Runner(engine, controller, source, sink, period_s=..., deadline_s=..., power=..., cpu=...).run(...)
returns a Trace (t, K, latency, deadline met, power, energy, accuracy proxy, load).
BudgetProfile / build_profile / calibrate_latency: per-K accuracy, latency and energy (the profiler
takes any object with step(x, K)). LoadTrace / replay: recorded slowdown traces, deterministic replay.
`controllers` is a leaf: it imports numpy and the standard library only, never essm_stream.
Exceptions: ControlError and subclasses (ControlConfigError is a ValueError).
"""
from __future__ import annotations

from .clock import FakeClock, MonotonicClock
from .control import (Controller, EnergyController, FixedK, LatencyController, MinOf, OndemandController,
                      PredictiveController, SlowdownKalman, StaleGuard, TailController)
from .errors import ControlConfigError, ControlError, ProfileError, TelemetryError
from .profile import (BudgetProfile, build_profile, calibrate_latency, load_sweep_json, synthetic_accuracy,
                      time_steps)
from .replay import LoadTrace, ReplayResult, replay
from .runner import ArraySource, ListSink, NullSink, RandomSource, Runner, Trace
from .telemetry import (CpuMonitor, HwmonPowerReader, LatencyMeter, PowerModel, RaplReader, Telemetry,
                        open_energy_source)

__all__ = ["FakeClock", "MonotonicClock", "Controller", "EnergyController", "FixedK", "LatencyController",
           "MinOf", "OndemandController", "PredictiveController", "SlowdownKalman", "StaleGuard", "TailController",
           "LoadTrace", "ReplayResult", "replay", "time_steps",
           "ControlConfigError", "ControlError", "ProfileError", "TelemetryError", "BudgetProfile",
           "build_profile", "calibrate_latency", "load_sweep_json", "synthetic_accuracy", "ArraySource",
           "ListSink", "NullSink", "RandomSource", "Runner", "Trace", "CpuMonitor", "HwmonPowerReader",
           "LatencyMeter", "PowerModel", "RaplReader", "Telemetry", "open_energy_source"]
