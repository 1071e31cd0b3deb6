"""The fixed-rate robot control loop: observation -> budget K -> engine step -> command (or hold).

After a hand-over of WARMUP ticks (sims/pendulum.py: the expert holds the robots while the policy
reads the stream), each tick (period 1 / rate_hz) of an episode, for a fleet of n robots stepped as
ONE engine batch:

    o = plant.observe()                     # joint positions, noisy, delayed (sims/pendulum.py)
    K = chooser.choose(t, telemetry)        # fixed, a controllers controller, or the oracle
    u_new = policy.act(o, K)                # StreamEngine.step over the batch (K per robot)
    u = u_new if latency <= deadline else u_prev     # a late command never reaches the actuator
    plant.step(u)                           # zero-order hold until the next tick

Two timing modes. Wall clock (deterministic=False): the step is timed with perf_counter, the loop
sleeps to the next tick so simulated time is locked to wall time, and a real co-running CPU load
(controllers.loadgen.CpuLoad, pinned to this process's core) follows the load schedule.
Deterministic (tests, CI): the latency of each step is modelled, not measured:
    latency(t, K) = mean_i profile.lat(K_i) x slowdown[level(t)] x jitter_t
with profile.lat measured once on the build machine (stored in the program's budget profile),
slowdown per load level (default 1, 1.6, 2.2), seeded log-normal jitter and rare 3x spikes; sim
time is not tied to wall time and every number is reproducible.

Costs per tick: the LQR stage cost x'Qx + u'Ru of the true state, COST_FALLEN once a robot has
fallen (so a fall always costs more than balancing badly). Energy: the KWS demo's MAC model
(essm_stream.kws.control.mac_energy_profile), summed per robot.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from essm_stream.errors import ConfigError

from .pendulum import WARMUP, LQRExpert, ObsModel, PendulumBatch

log = logging.getLogger(__name__)

COST_FALLEN = 50.0                               # stage cost charged per tick after a fall
KS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)          # budgets swept
SCENARIOS = ("none", "step", "bursts", "random", "const")


@dataclass
class LoopConfig:
    rate_hz: float = 200.0
    ticks: int = 1000                  # episode length after the hand-over (5 s at 200 Hz)
    n: int = 16                        # robots in the fleet (one engine batch)
    deadline_s: float | None = None    # inference slot per tick; None: deadline_factor x profile.lat(K̄)
    deadline_factor: float = 1.25
    deterministic: bool = True
    scenario: str = "none"             # load schedule: none | step | bursts | random | const
    level: int = 2                     # load level of the schedule (spinner processes in wall mode)
    slowdown: tuple = (1.0, 1.6, 2.2)  # modelled latency factor per load level (deterministic mode)
    jitter: float = 0.08               # log-normal sigma of the per-tick latency factor
    spike_p: float = 0.003             # probability of a 3x preemption spike per tick
    push_n: float = 0.0                # pushes on the upper pole: N(0, push_n^2) N (0: none) ...
    push_rate_hz: float = 1.0          # ... Poisson rate per robot ...
    push_ticks: int = 10               # ... held for push_ticks ticks
    seed: int = 0
    obs: ObsModel = field(default_factory=ObsModel)

    def __post_init__(self):
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if self.ticks < 1 or self.n < 1:
            raise ConfigError(f"ticks and n must be >= 1, got ticks={self.ticks}, n={self.n}")
        if not 0 <= self.level < len(self.slowdown):
            raise ConfigError(f"level={self.level} has no slowdown entry (slowdown={self.slowdown})")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ConfigError(f"deadline_s must be > 0, got {self.deadline_s}")


def load_levels(cfg: LoopConfig) -> np.ndarray:
    """Load level per tick for the scenario (the schedules of controllers.loadgen, over the episode)."""
    from controllers.loadgen import burst_schedule, random_schedule, step_schedule
    dur = cfg.ticks / cfg.rate_hz
    f = {"none": lambda t: 0,
         "const": lambda t: cfg.level,
         "step": step_schedule(0.3 * dur, 0.7 * dur, cfg.level),
         "bursts": burst_schedule(dur / 4, 0.5, cfg.level, t_start=0.125 * dur),
         "random": random_schedule(dur, seed=cfg.seed + 1, max_level=cfg.level, mean_hold_s=dur / 10)}[cfg.scenario]
    return np.array([f(t / cfg.rate_hz) for t in range(cfg.ticks)], dtype=np.int64)


def latency_factors(cfg: LoopConfig, levels: np.ndarray) -> np.ndarray:
    """Deterministic mode: the per-tick factor on the profiled latency (slowdown x jitter x spikes)."""
    rng = np.random.default_rng((cfg.seed, 3))
    f = np.asarray(cfg.slowdown, float)[levels] * np.exp(cfg.jitter * rng.standard_normal(len(levels)))
    return f * np.where(rng.random(len(levels)) < cfg.spike_p, 3.0, 1.0)


def handover(plant, policy, expert, K) -> None:
    """The first WARMUP ticks: the full-state expert holds the robots while the policy streams the
    observations (its commands are not applied), so that its memory is full when it takes over."""
    for _ in range(WARMUP):
        o = plant.observe()
        if not getattr(policy, "full_state", False):
            policy.act(o, K)
        plant.step(expert(plant.state()))


def pushes(cfg: LoopConfig, episodes: np.ndarray) -> np.ndarray:
    """(n, ticks) horizontal force on each robot's upper pole; a function of (seed, episode id)."""
    out = np.zeros((len(episodes), cfg.ticks))
    for i, e in enumerate(episodes):
        rng = np.random.default_rng((cfg.seed, 4, int(e)))
        starts = np.nonzero(rng.random(cfg.ticks) < cfg.push_rate_hz / cfg.rate_hz)[0]
        for s in starts:
            out[i, s:s + cfg.push_ticks] = rng.normal(0, cfg.push_n)
    return out


# ---- who picks K ----------------------------------------------------------------------------
class Fixed:
    def __init__(self, k: int):
        self.k, self.name = int(k), f"fixed K={int(k)}"

    def reset(self):
        pass

    def choose(self, t, tel):
        return self.k


class FromController:
    """Any controllers.Controller (update(Telemetry) -> K, then notify(K))."""

    def __init__(self, ctl, name: str | None = None):
        self.ctl, self.name = ctl, name or ctl.name

    def reset(self):
        self.ctl.reset()

    def choose(self, t, tel):
        k = int(self.ctl.update(tel))
        self.ctl.notify(k)
        return k


class Oracle:
    """Clairvoyant: knows this tick's latency of every K (`lat_at(t)` -> (K̄,) seconds) and runs
    the K of best profiled quality that meets the deadline (smallest on ties), else K = 1."""
    name = "oracle"

    def __init__(self, lat_at, quality: np.ndarray, deadline_s: float):
        self.lat_at, self.q, self.deadline_s = lat_at, np.asarray(quality, float), deadline_s

    def reset(self):
        pass

    def choose(self, t, tel):
        fits = self.lat_at(t) <= self.deadline_s
        if not fits.any():
            return 1
        q = np.where(fits, self.q, -np.inf)
        return 1 + int(np.argmax(q))


@dataclass
class EpisodeResult:
    name: str
    success: float                 # fraction of robots still up at the end
    cost: float                    # mean per tick per robot (COST_FALLEN after a fall)
    miss_rate: float               # fraction of ticks whose command missed the deadline
    mean_k: float
    step_s: float                  # mean policy step time per tick (modelled or measured), whole batch
    energy_j: float                # MAC-model inference energy per robot over the episode
    trace: dict | None = None

    def row(self, scenario: str) -> dict:
        return {"name": self.name, "scenario": scenario, "success_rate": self.success, "mean_cost": self.cost,
                "deadline_miss_rate": self.miss_rate, "mean_K": self.mean_k,
                "inference_s_per_step": self.step_s, "energy_j_per_robot": self.energy_j}


def run_episode(policy, chooser, cfg: LoopConfig, *, profile=None, episodes=None, energy_k=None,
                load=None, record: bool = False, expert: LQRExpert | None = None) -> EpisodeResult:
    """One episode of the fleet. `profile` (BudgetProfile with latency_s) is needed for the
    deterministic latency model and the default deadline; energy_k (K̄,) J per step per robot."""
    from controllers.telemetry import Telemetry
    n, T = cfg.n, cfg.ticks
    episodes = np.arange(n) if episodes is None else np.asarray(episodes)
    plant = PendulumBatch(n, rate_hz=cfg.rate_hz, obs=cfg.obs, seed=cfg.seed, episodes=episodes)
    expert = expert or LQRExpert(plant.model)
    policy.reset(n)
    chooser.reset()
    levels = load_levels(cfg)
    lat_prof = None if profile is None or profile.latency_s is None else np.asarray(profile.latency_s)
    if cfg.deterministic and lat_prof is None and cfg.deadline_s is not None and cfg.deadline_s < 1e6:
        raise ConfigError("deterministic mode with a deadline needs a profile with latency_s (the program's "
                          "budget profile) to model the step latency")
    deadline = cfg.deadline_s
    if deadline is None:
        deadline = np.inf if lat_prof is None else cfg.deadline_factor * lat_prof[-1]
    factor = latency_factors(cfg, levels)
    F = pushes(cfg, episodes)
    handover(plant, policy, expert, profile.k_max if profile is not None else None)
    u_prev = expert(plant.state())
    cost = np.zeros(n)
    misses, ksum, lat_sum, e_cum = 0, 0.0, 0.0, 0.0
    tel = Telemetry()
    rec = {k: [] for k in ("t", "x", "u", "k", "lat", "met", "level")} if record else None
    period = 1.0 / cfg.rate_hz
    t_wall0 = time.perf_counter()
    for t in range(T):
        if load is not None:
            load.set_level(int(levels[t]))
        o = plant.observe()
        K = chooser.choose(t, tel)
        Karr = np.broadcast_to(np.asarray(K, np.int64), (n,))
        t0 = time.perf_counter()
        u_new = expert(plant.state()) if getattr(policy, "full_state", False) else policy.act(o, K)
        lat = time.perf_counter() - t0
        if cfg.deterministic:
            lat = float(lat_prof[Karr - 1].mean() * factor[t]) if lat_prof is not None else 0.0
        met = lat <= deadline
        u = u_new if met else u_prev
        misses += not met
        kmean = float(Karr.mean())
        ksum += kmean
        lat_sum += lat
        if energy_k is not None:
            e_cum += float(np.asarray(energy_k)[Karr - 1].mean())
        x = plant.state()
        c = expert.stage_cost(x, u)
        cost += np.where(plant.fallen, COST_FALLEN, np.minimum(c, COST_FALLEN))
        if rec is not None:
            rec["t"].append(t * period)
            rec["x"].append(x[0].copy())
            rec["u"].append(float(u[0]))
            rec["k"].append(int(Karr[0]))
            rec["lat"].append(lat)
            rec["met"].append(met)
            rec["level"].append(int(levels[t]))
        plant.push(F[:, t])
        plant.step(u)
        u_prev = u
        tel = Telemetry(t_s=t * period, k=int(round(kmean)), latency_s=lat,
                        deadline_s=None if not np.isfinite(deadline) else deadline, dt_s=period,
                        energy_j=e_cum if energy_k is not None else None)
        if not cfg.deterministic:                 # sim time locked to wall time: wait for the next tick
            wait = t_wall0 + (t + 1) * period - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
    if load is not None:
        load.set_level(0)
    trace = None
    if rec is not None:
        trace = {k: np.asarray(v) for k, v in rec.items()}
        trace["deadline_s"] = deadline
    return EpisodeResult(chooser.name, float(1 - plant.fallen.mean()), float(cost.mean() / T), misses / T,
                         ksum / T, lat_sum / T, e_cum, trace)


def sweep_k(program, cfg: LoopConfig, ks=KS, episodes: int = 32):
    """Success and cost per fixed K, no load, no deadline: every K in ONE engine batch (per-robot K),
    each K on the same `episodes` episodes. Returns {K: (success, cost)}."""
    from .policies import ESSMPolicy
    ks = [int(k) for k in ks if 1 <= k <= program.k_max]
    kvec = np.repeat(ks, episodes)
    ids = np.tile(np.arange(episodes), len(ks))
    c = LoopConfig(**{**cfg.__dict__, "n": len(kvec), "scenario": "none", "deterministic": True,
                      "deadline_s": 1e9})
    pol = ESSMPolicy(program, n=len(kvec))
    n, T = len(kvec), c.ticks
    plant = PendulumBatch(n, rate_hz=c.rate_hz, obs=c.obs, seed=c.seed, episodes=ids)
    expert = LQRExpert(plant.model)
    F = pushes(c, ids)
    cost = np.zeros(n)
    pol.reset(n)
    handover(plant, pol, expert, kvec)
    for t in range(T):
        u = pol.act(plant.observe(), kvec)
        cost += np.where(plant.fallen, COST_FALLEN, np.minimum(expert.stage_cost(plant.state(), u), COST_FALLEN))
        plant.push(F[:, t])
        plant.step(u)
    up = ~plant.fallen
    return {k: (float(up[kvec == k].mean()), float(cost[kvec == k].mean() / T)) for k in ks}


def run_policy(policy, cfg: LoopConfig, episodes: int = 32, name: str | None = None) -> EpisodeResult:
    """A policy without a budget (peer, expert) on the sweep's episodes, no load, no deadline."""
    c = LoopConfig(**{**cfg.__dict__, "n": episodes, "scenario": "none", "deterministic": True, "deadline_s": 1e9})
    ch = Fixed(1)
    ch.name = name or policy.name
    return run_episode(policy, ch, c)


class ExpertPolicy:
    """The LQR expert as a 'policy': run_episode hands it the true full state, not the observation."""
    name = "LQR expert (full state)"
    full_state = True

    def reset(self, n=None):
        pass


def quality(sweep: dict) -> tuple[list, list]:
    """Profile 'accuracy' per K: success x (best cost / cost(K)), in (0, 1], so that among budgets
    that all balance the cheaper-running (better-balancing) one still scores higher."""
    ks = sorted(sweep)
    best = min(sweep[k][1] for k in ks)
    return ks, [sweep[k][0] * best / sweep[k][1] for k in ks]


def time_step(policy, n: int, K=None, steps: int = 400, rounds: int = 4) -> float:
    """Median wall time of one policy step over a batch of n (rounds interleaved with nothing)."""
    rng = np.random.default_rng(0)
    policy.reset(n)
    o = rng.standard_normal((n, 3))
    for _ in range(20):
        policy.act(o, K)
    ts = []
    for _ in range(rounds * (steps // rounds)):
        t0 = time.perf_counter()
        policy.act(o, K)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))
