"""Energy-aware budget for keyword spotting: spend where there is sound, save where there is none.

    ctl = kws_energy_controller(program, fraction=0.5)    # average power target = 50% of K = 32
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
                 step_s: float = 0.02, floor_rise_db_s: float = 3.0):
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


def calibrate_energy(program, ks=(1, 2, 4, 8, 16, 32), steps: int = 60, rounds: int = 5,
                     dyn_w: float = 3.0) -> dict:
    """Budget profile with latency/energy per K measured here and now (mean wall seconds per step,
    K interleaved round-robin so that every K sees the same machine load): the controller then
    targets this machine's power, not the build machine's."""
    import time

    import numpy as np

    from ..engine import StreamEngine

    eng = StreamEngine(program, batch=1, dtype=np.float32)
    eng.warmup()
    x = np.random.default_rng(0).standard_normal((steps, program.d_in)).astype(np.float32)
    tot = np.zeros(len(ks))
    for _ in range(rounds):
        for j, K in enumerate(ks):
            t0 = time.perf_counter()
            for i in range(steps):
                eng.step(x[i], K)
            tot[j] += time.perf_counter() - t0
    lat = (tot / (rounds * steps)).tolist()
    prof = dict(program.budget_profile or {})
    acc = prof.get("accuracy")
    if acc is not None:
        acc = [float(np.interp(k, prof["K"], acc)) for k in ks]
    return {"K": list(ks), "accuracy": acc, "latency_s": lat, "energy_j": [dyn_w * t for t in lat]}


E_MAC_J = 1e-10     # energy per multiply-accumulate of the MAC model (order of a Cortex-M/A core)


def macs_per_step(cfg, K: int) -> int:
    """Multiply-accumulates of one engine step at budget K: per layer the K FIRs of length L over d
    channels, the (K+1) d x d mixing (D and M_k), the gate and the MLP; plus input and output maps."""
    d, L, dg = cfg.d_model, cfg.seq_len, cfg.d_gate
    layer = K * L * d + (K + 1) * d * d
    if cfg.gated:
        layer += dg * d + K * dg
    if cfg.mlp:
        layer += 2 * cfg.mlp_ratio * d * d
    return cfg.n_layers * layer + cfg.d_in * d + d * cfg.d_out


def mac_energy_profile(program, e_mac: float = E_MAC_J) -> dict:
    """Energy per step for every K from the MAC count (what a C/MCU kernel spends), beside the
    program's measured accuracy. On this host the Python/numba call overhead per step (≈ 10 µs)
    is as large as the K-dependent work, so measured CPU time hides most of the K dependence."""
    import numpy as np

    ks = list(range(1, program.k_max + 1))
    prof = dict(program.budget_profile or {})
    acc = prof.get("accuracy")
    if acc is not None:
        acc = [float(np.interp(k, prof["K"], acc)) for k in ks]
    return {"K": ks, "accuracy": acc, "latency_s": None,
            "energy_j": [e_mac * macs_per_step(program.cfg, k) for k in ks]}


def kws_energy_controller(program, fraction: float = 0.5, k_quiet: int = 1, bucket_s: float = 3.0,
                          k_min: int | None = None, energy: str = "macs"):
    """ActivityGate(EnergyController) with an average-power target of `fraction` x the power at
    K = K̄. energy="macs": the MAC-count energy model (deterministic; the spotter reports the same
    model through `energy_per_step`); "measured": a profile of wall time per K measured here now
    (≈ 0.1 s) x 3 W, with the spotter's energy from measured step times."""
    from controllers.control import EnergyController
    from controllers.profile import BudgetProfile

    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    if energy == "macs":
        prof = BudgetProfile.from_dict(mac_energy_profile(program), program.k_max)
    elif energy == "measured":
        prof = BudgetProfile.from_dict(calibrate_energy(program), program.k_max)
    else:
        raise ConfigError(f"energy must be 'macs' or 'measured', got {energy!r}")
    step_s = program.frontend.get("stack", 1) * program.frontend["hop_length"] / program.frontend["sample_rate"]
    target_w = fraction * prof.energy(program.k_max) / step_s
    if k_min is None:
        k_min = 1
    inner = EnergyController(profile=prof, power_w=target_w, bucket_s=bucket_s, k_min=k_min, k_init=program.k_max)
    gate = ActivityGate(inner, k_quiet=k_quiet, step_s=step_s)
    if energy == "macs":
        gate.energy_per_step = prof.energy          # K -> J, read by KeywordSpotter for its energy counter
    return gate
