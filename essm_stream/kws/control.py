"""Energy-aware budget for keyword spotting: spend where there is sound, save where there is none.

    ctl = kws_energy_controller(program, fraction=0.4)    # average power target = 40% of K = 32
    spotter = KeywordSpotter(program, controller=ctl)

`ActivityGate` wraps any `controllers` controller (`update(Telemetry) -> K`): it tracks the input
level the spotter reports every step (`observe_level(dB)`) against a running noise floor; while the
level stays within `margin_db` of the floor (no speech) K drops to `k_quiet`, otherwise the inner
controller decides. The inner `controllers.EnergyController` runs a token bucket on the spotter's
energy counter, so what quiet stretches save is spent on the next words (up to `bucket_s` worth).
The engine keeps raw inputs, so channels switched back on at a word's onset are exact.
"""
from __future__ import annotations

from ..errors import ConfigError


class ActivityGate:
    """K = min(inner K, k_quiet) while the input is near its noise floor, else the inner K."""

    def __init__(self, inner, *, k_quiet: int = 1, margin_db: float = 6.0, hang_s: float = 0.6,
                 step_s: float = 0.02, floor_rise_db_s: float = 1.0):
        if not callable(getattr(inner, "update", None)):
            raise ConfigError(f"inner controller must have update(telemetry) -> K, got {type(inner).__name__}")
        if k_quiet < 1 or margin_db <= 0 or hang_s < 0 or step_s <= 0:
            raise ConfigError("ActivityGate needs k_quiet >= 1, margin_db > 0, hang_s >= 0, step_s > 0")
        self.inner, self.k_quiet, self.margin_db = inner, int(k_quiet), float(margin_db)
        self.hang_steps = int(round(hang_s / step_s))
        self.rise = floor_rise_db_s * step_s
        self.reset()

    def reset(self) -> None:
        self.floor_db = None
        self.hang = 0
        self.active = False
        self.k = getattr(self.inner, "k", 32)
        if hasattr(self.inner, "reset"):
            self.inner.reset()

    def observe_level(self, level_db: float) -> None:
        # Noise floor: follows the level down at once, up slowly (speech never lifts it much).
        if self.floor_db is None or level_db < self.floor_db:
            self.floor_db = level_db
        else:
            self.floor_db += self.rise
        if level_db > self.floor_db + self.margin_db:
            self.hang = self.hang_steps
        else:
            self.hang = max(0, self.hang - 1)
        self.active = self.hang > 0

    def update(self, telemetry=None, dt=None) -> int:
        k = int(self.inner.update(telemetry))
        if not self.active:
            k = min(k, self.k_quiet)
        if hasattr(self.inner, "notify"):
            self.inner.notify(k)
        self.k = k
        return k


def kws_energy_controller(program, fraction: float = 0.4, k_quiet: int = 1, bucket_s: float = 3.0,
                          k_min: int | None = None):
    """ActivityGate(EnergyController) with an average-power target of `fraction` x the power the
    program's profile predicts at K = K̄ (dynamic energy per step / step period)."""
    from controllers.control import EnergyController
    from controllers.profile import BudgetProfile

    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    prof = BudgetProfile.from_program(program)
    step_s = program.frontend.get("stack", 1) * program.frontend["hop_length"] / program.frontend["sample_rate"]
    target_w = fraction * prof.energy(program.k_max) / step_s
    if k_min is None:
        k_min = 1
    inner = EnergyController(profile=prof, power_w=target_w, bucket_s=bucket_s, k_min=k_min, k_init=program.k_max)
    return ActivityGate(inner, k_quiet=k_quiet, step_s=step_s)
