"""`essm-stream sim`: the bundled pendulum policy in the fixed-rate loop, against peers and under load.

    essm-stream sim --deterministic --json sim.json --plots docs/img     # reproducible (CI)
    essm-stream sim                                                      # wall clock, real CPU load
    python -m sims.robot_sim --bundle runs/pendulum                      # profile + bundle a new policy

What one run measures (see docs/SIMS.md):
1. budget sweep: success and cost of the ES-SSM at every K (no load), every K in one engine batch;
2. peers on the same episodes: memoryless MLP, MLP on a stack of observations, GRU, the full-state
   LQR expert; per-step inference time at batch 1;
3. under load (step, bursts, random schedules) for a fleet of n robots in one engine batch:
   fixed K = K̄, the best fixed K, the largest K safe under the peak load, the latency PI and the
   predictive controller (controllers/, with this policy's profile) and the clairvoyant oracle;
4. misses vs a constant slowdown; per-robot inference cost vs fleet size N;
5. a mission-energy budget: balance for the episode on E joules of (MAC-model) inference energy.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time

import numpy as np

from essm_stream.errors import ConfigError

from .robot_loop import (KS, ExpertPolicy, Fixed, FromController, LoopConfig, Oracle, latency_factors, load_levels,
                         quality, run_episode, run_policy, sweep_k, time_step)

log = logging.getLogger(__name__)

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "essm_stream", "assets")
POLICY = "pendulum_policy.essm"
PEERS = "pendulum_peers.npz"
PROFILE_BATCH = 16      # the fleet size whose step latency the bundled profile holds
MISS_BOUND = 0.02       # the controller's deadline-miss rate stays below this under the load traces


def default_paths():
    """The bundled policy and peers (installed with the package as essm_stream/assets)."""
    try:
        from importlib.resources import files
        base = files("essm_stream") / "assets"
        return str(base / POLICY), str(base / PEERS)
    except (ImportError, ModuleNotFoundError):
        return os.path.join(ASSETS, POLICY), os.path.join(ASSETS, PEERS)


def load_bundle(policy_path=None, peers_path=None):
    from essm_stream.program import StreamProgram
    pp, qp = default_paths()
    policy_path, peers_path = policy_path or pp, peers_path or qp
    for p in (policy_path, peers_path):
        if not os.path.isfile(p):
            raise ConfigError(f"{p} does not exist (build one: python -m sims.imitation, then "
                              "python -m sims.robot_sim --bundle RUN_DIR)")
    return StreamProgram.load(policy_path), policy_path, peers_path


def energy_per_k(program) -> np.ndarray:
    """(K̄,) joules per step per robot: the KWS demo's MAC model."""
    from essm_stream.kws.control import mac_energy_profile
    return np.asarray(mac_energy_profile(program)["energy_j"], float)


def measured_latency(program, n: int, ks=KS) -> dict:
    """Median step latency of an n-robot batch at each K, here and now (controllers.calibrate_latency)."""
    from controllers.profile import calibrate_latency
    from essm_stream.engine import StreamEngine
    eng = StreamEngine(program, batch=n, dtype=np.float32)
    return calibrate_latency(eng, ks, steps=400, rounds=4)


def paced_latency(program, n: int, ks=KS, rate_hz: float = 200.0, steps: int = 60, rounds: int = 3) -> dict:
    """Wall-clock mode: median time of the whole policy step (engine + I/O) for an n-robot batch
    at each K, paced at the control rate as in the loop (a paced step runs with colder caches than a
    back-to-back one), K visited in interleaved rounds so that drift spreads over every K."""
    from .policies import ESSMPolicy
    pol = ESSMPolicy(program, n=n)
    o = np.random.default_rng(0).standard_normal((n, 3))
    samples = {k: [] for k in ks}
    period = 1.0 / rate_hz
    for r in range(rounds):
        for k in (ks if r % 2 == 0 else ks[::-1]):
            nxt = time.perf_counter()
            for _ in range(steps // rounds):
                nxt += period
                wait = nxt - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                t0 = time.perf_counter()
                pol.act(o, k)
                samples[k].append(time.perf_counter() - t0)
    med = list(np.maximum.accumulate([float(np.median(samples[k])) for k in ks]))
    return {"K": list(ks), "latency_s": med}


def make_profile(program, sweep: dict, lat: dict) -> dict:
    ks, q = quality(sweep)
    e = energy_per_k(program)
    lat_k = np.interp(ks, lat["K"], lat["latency_s"])
    return {"K": ks, "accuracy": [float(v) for v in q], "latency_s": [float(v) for v in lat_k],
            "energy_j": [float(e[k - 1]) for k in ks],
            "success": [sweep[k][0] for k in ks], "cost": [sweep[k][1] for k in ks],
            "batch": int(lat.get("batch", PROFILE_BATCH)),
            "source": {"accuracy": "success x (best cost / cost) from sims.robot_loop.sweep_k (deterministic)",
                       "latency": f"median engine step of a {lat.get('batch', PROFILE_BATCH)}-robot batch, "
                                  "calibrate_latency, machine shared with other jobs",
                       "energy": "MAC model (essm_stream.kws.control.mac_energy_profile)"}}


def bundle(run_dir: str, dest: str = ASSETS, episodes: int = 32) -> dict:
    """Sweep K, measure latency at the profile batch, store the profile in the program, copy the
    program and the peers into the package assets."""
    from essm_stream.program import StreamProgram
    prog = StreamProgram.load(os.path.join(run_dir, "policy.essm"))
    sw = sweep_k(prog, LoopConfig(), episodes=episodes)
    lat = measured_latency(prog, PROFILE_BATCH)
    lat["batch"] = PROFILE_BATCH
    prof = make_profile(prog, sw, lat)
    prog.set_budget_profile(prof)
    os.makedirs(dest, exist_ok=True)
    prog.save(os.path.join(dest, POLICY))
    shutil.copyfile(os.path.join(run_dir, "peers.npz"), os.path.join(dest, PEERS))
    log.info("bundled %s (%d bytes) and %s", POLICY, os.path.getsize(os.path.join(dest, POLICY)), PEERS)
    return prof


# ---- the evaluation ---------------------------------------------------------------------------
def contenders(profile, deadline_s: float, lat_at, k_best: int, k_safe: int):
    """name -> factory of a fresh chooser."""
    from controllers import LatencyController, PredictiveController
    kmax = profile.k_max
    q = profile.accuracy
    out = {f"fixed K={kmax}": lambda: Fixed(kmax),
           f"fixed best K={k_best}": lambda: Fixed(k_best),
           f"fixed safe K={k_safe}": lambda: Fixed(k_safe),
           "latency PI": lambda: FromController(LatencyController(deadline_s=deadline_s, k_max=kmax, k_init=kmax)),
           "predictive": lambda: FromController(PredictiveController(profile=profile, deadline_s=deadline_s,
                                                                     k_init=kmax)),
           "oracle": lambda: Oracle(lat_at, q, deadline_s)}
    if k_best == kmax:
        out.pop(f"fixed best K={k_best}")
    if k_safe == kmax:
        out.pop(f"fixed safe K={k_safe}", None)
    return out


def evaluate(program, peers_path: str, *, deterministic: bool = True, n: int = 16, ticks: int = 1000,
             episodes: int = 32, scenarios=("step", "bursts", "random"), rate_hz: float = 200.0, level: int = 2,
             seed: int = 0, robots=(1, 2, 4, 8, 16, 32, 64, 128), deadline_factor: float | None = None,
             push_n: float = 0.0,
             progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from controllers import BudgetProfile
    from .policies import ESSMPolicy, load_peers
    t_start = time.time()
    kmax = program.k_max
    base = LoopConfig(rate_hz=rate_hz, ticks=ticks, n=n, deterministic=deterministic, level=level, seed=seed,
                      push_n=push_n)
    # 1. budget sweep, this run
    sw = sweep_k(program, base, episodes=episodes)
    # the latency profile: the program's (deterministic), or measured here now (wall clock)
    if deterministic:
        if program.budget_profile is None:
            raise ConfigError("--deterministic needs a program with a budget profile (python -m sims.robot_sim --bundle)")
        lat = {"K": program.budget_profile["K"], "latency_s": program.budget_profile["latency_s"]}
    else:
        lat = paced_latency(program, n, rate_hz=rate_hz)
    lat["batch"] = n
    prof_d = make_profile(program, sw, lat)
    profile = BudgetProfile.from_dict(prof_d, kmax)
    lat_k = np.asarray(profile.latency_s)
    if deadline_factor is None:      # wall clock: a loaded shared machine jitters far more than the model
        deadline_factor = base.deadline_factor if deterministic else 2.0
    base.deadline_factor = deadline_factor
    deadline = deadline_factor * lat_k[-1]
    smax = base.slowdown[level]
    # the largest K whose step fits the deadline at the peak load (nominal slowdown, 2-sigma jitter)
    fit = np.nonzero(lat_k * smax * np.exp(2 * base.jitter) <= deadline)[0]     # 2-sigma jitter margin
    k_safe = int(fit[-1]) + 1 if len(fit) else 1
    ess = ESSMPolicy(program, n=n)
    peers = load_peers(peers_path, n=episodes)
    # 2. peers on the same episodes, and per-step inference time at batch 1
    rows_policy = []
    best_k = max(sw, key=lambda k: (sw[k][0], -sw[k][1]))
    # on the swept budgets (the profile interpolates between them)
    sweet = min((k for k in sw if k >= (profile.sweet_spot or kmax)), default=kmax)
    collapse = min((k for k in sw if k >= (profile.collapse_boundary or kmax)), default=kmax)
    timing = {}
    e1 = ESSMPolicy(program, n=1)
    for k in sorted({kmax, sweet, best_k, 1}):
        timing[f"ES-SSM K={k}"] = time_step(e1, 1, k)
    for name, p in load_peers(peers_path, n=1).items():
        timing[name] = time_step(p, 1)
    for k in sorted({kmax, sweet, best_k}):
        s, c = sw[k]
        rows_policy.append({"name": f"ES-SSM K={k}", "scenario": "no load", "success_rate": s, "mean_cost": c,
                            "deadline_miss_rate": 0.0, "mean_K": float(k),
                            "inference_s_per_step": timing[f"ES-SSM K={k}"]})
    for name, p in peers.items():
        r = run_policy(p, base, episodes=episodes)
        rows_policy.append({**r.row("no load"), "mean_K": None, "inference_s_per_step": timing[name]})
    r = run_policy(ExpertPolicy(), base, episodes=episodes)
    rows_policy.append({**r.row("no load"), "mean_K": None, "inference_s_per_step": None})
    # 3. under load
    ek = energy_per_k(program)
    load = None
    if not deterministic:
        from controllers.loadgen import CpuLoad
        core = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {core})
        n_runs = len(scenarios) * 6 + 8
        load = CpuLoad(core=core, max_workers=level, max_s=n_runs * (ticks / rate_hz + 3) + 120).start()
    rows_load, traces = [], {}
    try:
        jobs = []
        for sc in scenarios:
            cfg = LoopConfig(**{**base.__dict__, "scenario": sc})
            levels = load_levels(cfg)
            fac = latency_factors(cfg, levels) if deterministic else np.asarray(cfg.slowdown)[levels]
            lat_at = (lambda f: (lambda t: lat_k * f[t]))(fac)
            # the best fixed K for this trace: every fixed K of the sweep, the best (success, then cost) wins
            fixed = {}
            # (wall clock: a subset, every episode takes its real duration)
            for k in (KS if deterministic else (4, 8, 16, kmax)):
                fixed[k] = run_episode(ess, Fixed(k), cfg, profile=profile, energy_k=ek, load=load)
            kb = max(fixed, key=lambda k: (fixed[k].success, -fixed[k].cost))
            for name, fac_ in contenders(profile, deadline, lat_at, kb, k_safe).items():
                jobs.append((sc, cfg, name, fac_))
        for sc, cfg, name, factory in tqdm(jobs, desc="sim", disable=not progress):
            ch = factory()
            ch.name = name
            res = run_episode(ess, ch, cfg, profile=profile, energy_k=ek, load=load,
                              record=(sc == "step"))
            rows_load.append(res.row(sc))
            if res.trace is not None:
                traces[name] = res.trace
        # 4a. misses vs a constant slowdown (deterministic latency model, shorter episodes)
        misses = {}
        for s in (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0):
            cfg = LoopConfig(**{**base.__dict__, "scenario": "const", "level": 1, "slowdown": (1.0, s),
                                "deterministic": True, "ticks": min(ticks, 600)})
            fac = latency_factors(cfg, load_levels(cfg))
            lat_at = (lambda f: (lambda t: lat_k * f[t]))(fac)
            for name, factory in contenders(profile, deadline, lat_at, best_k, k_safe).items():
                if name.startswith("fixed best") or name.startswith("fixed safe"):
                    continue
                ch = factory()
                ch.name = name
                r = run_episode(ess, ch, cfg, profile=profile)
                misses.setdefault(name, []).append((s, r.miss_rate, r.success))
    finally:
        if load is not None:
            load.stop()
    # 4b. per-robot inference cost vs fleet size (measured here; the machine is shared)
    fleet = {"N": list(robots), "ES-SSM K=32": [], "ES-SSM mixed K": [], "GRU": [], "MLP (stack 8)": []}
    rng = np.random.default_rng(0)
    for N in robots:
        e = ESSMPolicy(program, n=N)
        fleet["ES-SSM K=32"].append(time_step(e, N, kmax, steps=200) / N)
        fleet["ES-SSM mixed K"].append(time_step(e, N, rng.choice([best_k, kmax], N).astype(np.int64), steps=200) / N)
        for name, p in load_peers(peers_path, n=N).items():
            if name in fleet:
                fleet[name].append(time_step(p, N, steps=200) / N)
    # 5. mission energy: balance `ticks` on a fraction of what K̄ would spend
    from controllers import EnergyController
    mission = []
    cfgm = LoopConfig(**{**base.__dict__, "scenario": "none", "deterministic": True})
    e_full, e_min = ek[kmax - 1] * ticks, ek[0] * ticks
    for frac in (1.0, 0.5, 0.25, 0.1, 0.0):
        # the budget lies `frac` of the way from what K = 1 spends to what K = K̄ spends
        budget = e_min + frac * (e_full - e_min)
        ctl = EnergyController(profile=profile, mission_j=budget, mission_s=ticks / rate_hz,
                               bucket_s=0.25, k_init=kmax)
        r = run_episode(ess, FromController(ctl, "energy (mission)"), cfgm, profile=profile, energy_k=ek)
        kfix = int(np.nonzero(ek * ticks <= budget * (1 + 1e-9))[0][-1]) + 1
        rf = run_episode(ess, Fixed(kfix), cfgm, profile=profile, energy_k=ek)
        mission.append({"budget_frac": frac, "budget_j": budget, "budget_of_full": budget / e_full,
                        "controller": {"success": r.success, "cost": r.cost, "energy_j": r.energy_j, "mean_K": r.mean_k},
                        "fixed": {"K": kfix, "success": rf.success, "cost": rf.cost, "energy_j": rf.energy_j}})
    return {"config": {"deterministic": deterministic, "n": n, "ticks": ticks, "rate_hz": rate_hz,
                       "episodes": episodes, "level": level, "slowdown": list(base.slowdown), "deadline_s": deadline,
                       "deadline_factor": deadline_factor, "push_n": push_n,
                       "k_safe": k_safe, "sweet_spot": sweet, "collapse_boundary": collapse, "best_k": best_k,
                       "obs": vars(base.obs), "seconds": None},
            "sweep": {str(k): {"success": v[0], "cost": v[1]} for k, v in sw.items()},
            "profile": prof_d, "policies": rows_policy, "load": rows_load, "misses_vs_slowdown": misses,
            "fleet": fleet, "mission": mission, "traces": traces, "seconds": time.time() - t_start}


# ---- reporting --------------------------------------------------------------------------------
def table(rows, title: str) -> str:
    head = f"{'contender':<26} {'scenario':<9} {'success':>8} {'cost':>8} {'miss':>7} {'mean K':>7} {'µs/step':>8}"
    lines = [title, head, "-" * len(head)]
    for r in rows:
        k = "-" if r.get("mean_K") is None else f"{r['mean_K']:.1f}"
        us = "-" if r.get("inference_s_per_step") is None else f"{r['inference_s_per_step'] * 1e6:.1f}"
        lines.append(f"{r['name']:<26} {r['scenario']:<9} {r['success_rate']:>8.3f} {r['mean_cost']:>8.3f} "
                     f"{r['deadline_miss_rate']:>7.3f} {k:>7} {us:>8}")
    return "\n".join(lines)


def report(res: dict) -> str:
    c = res["config"]
    out = [f"budget sweep (no load, {c['episodes']} episodes of {c['ticks']} ticks at {c['rate_hz']:g} Hz): "
           f"best K={c['best_k']} (success, then cost), collapse boundary K={c['collapse_boundary']}, "
           f"sweet spot K={c['sweet_spot']} (98% of K̄'s quality, from K̄ down)",
           "  K:       " + " ".join(f"{k:>6}" for k in res["sweep"]),
           "  success: " + " ".join(f"{v['success']:>6.2f}" for v in res["sweep"].values()),
           "  cost:    " + " ".join(f"{v['cost']:>6.2f}" for v in res["sweep"].values()), "",
           table(res["policies"], "policies (same episodes; µs/step = one robot, batch 1, measured here, machine shared)"),
           "",
           table(res["load"], f"fleet of {c['n']} robots in one batch under load (deadline {c['deadline_s'] * 1e6:.1f} µs; "
                              f"{'modelled' if c['deterministic'] else 'measured'} latency; µs/step = whole batch)"),
           "", "per-robot inference µs vs fleet size N: " + ", ".join(
               f"N={n}: {res['fleet']['ES-SSM K=32'][i] * 1e6:.2f}" for i, n in enumerate(res["fleet"]["N"])),
           "", "mission energy (balance the episode on E joules per robot, MAC model; E from K=1's to K̄'s):"]
    for m in res["mission"]:
        out.append(f"  budget {m['budget_of_full']:>5.2f} x K̄'s energy: controller success {m['controller']['success']:.2f} "
                   f"cost {m['controller']['cost']:.2f} used {m['controller']['energy_j'] / m['budget_j']:.2f} of budget "
                   f"(mean K {m['controller']['mean_K']:.1f}); fixed K={m['fixed']['K']} success "
                   f"{m['fixed']['success']:.2f} cost {m['fixed']['cost']:.2f}")
    return "\n".join(out)


def rows_json(res: dict) -> list:
    return res["policies"] + res["load"]


def plots(res: dict, out_dir: str) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from essm_stream.fileio import save_figure
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    # loop traces, step scenario
    tr = res["traces"]
    show = [n for n in tr if n.startswith("fixed K=") or n in ("predictive", "oracle")]
    if show:
        fig, ax = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
        for name in show:
            t = tr[name]
            ax[0].plot(t["t"], t["x"][:, 1] + t["x"][:, 2], lw=0.8, label=name)
            ax[1].plot(t["t"], t["u"], lw=0.6, label=name)
            ax[2].step(t["t"], t["k"], lw=0.8, where="post", label=name)
            ax[3].plot(t["t"], t["lat"] * 1e6, lw=0.5, label=name)
        t0 = tr[show[0]]
        ax[3].axhline(t0["deadline_s"] * 1e6, color="k", ls="--", lw=0.8, label="deadline")
        ax3b = ax[3].twinx()
        ax3b.fill_between(t0["t"], 0, t0["level"], step="post", alpha=0.12, color="gray")
        ax3b.set_ylabel("load level")
        ax[0].set_ylabel("tip angle (rad)\nrobot 0")
        ax[1].set_ylabel("command u")
        ax[2].set_ylabel("budget K")
        ax[3].set_ylabel("step latency (µs)")
        ax[3].set_xlabel("time (s)")
        ax[0].legend(fontsize=7, ncol=3)
        ax[3].legend(fontsize=7, loc="upper left")
        fig.suptitle("step load: state, command, K and latency over time")
        fig.tight_layout()
        p = os.path.join(out_dir, "sim_loop.png")
        save_figure(fig, p)
        paths.append(p)
    # success vs K
    ks = [int(k) for k in res["sweep"]]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    ax[0].plot(ks, [res["sweep"][str(k)]["success"] for k in ks], "o-", label="ES-SSM")
    ax[1].plot(ks, [res["sweep"][str(k)]["cost"] for k in ks], "o-", label="ES-SSM")
    peers = [r for r in res["policies"] if not r["name"].startswith("ES-SSM")]
    for i, r in enumerate(peers):
        ax[0].axhline(r["success_rate"], ls="--", lw=1.0, label=r["name"], color=f"C{i + 1}")
        ax[1].axhline(r["mean_cost"], ls="--", lw=1.0, label=r["name"], color=f"C{i + 1}")
    for a, yl in zip(ax, ("success rate", "mean cost per tick")):
        a.set_xscale("log", base=2)
        a.set_xlabel("budget K")
        a.set_ylabel(yl)
    ax[1].set_yscale("log")
    ax[0].legend(fontsize=7)
    fig.suptitle("budget sweep: success and cost vs K (no load), peers as lines")
    fig.tight_layout()
    p = os.path.join(out_dir, "sim_success_vs_k.png")
    save_figure(fig, p)
    paths.append(p)
    # misses vs load
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, pts in res["misses_vs_slowdown"].items():
        s, m, ok = zip(*pts)
        ax[0].plot(s, m, "o-", label=name)
        ax[1].plot(s, ok, "o-", label=name)
    ax[0].set_ylabel("deadline-miss rate")
    ax[1].set_ylabel("success rate")
    for a in ax:
        a.set_xlabel("CPU slowdown (latency factor)")
    ax[0].legend(fontsize=7)
    fig.suptitle("misses and success vs load (modelled latency)")
    fig.tight_layout()
    p = os.path.join(out_dir, "sim_misses_vs_load.png")
    save_figure(fig, p)
    paths.append(p)
    # per-robot cost vs N
    fl = res["fleet"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in fl:
        if name != "N" and fl[name]:
            ax.plot(fl["N"], np.asarray(fl[name]) * 1e6, "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("robots N in one batch")
    ax.set_ylabel("inference µs per robot per tick")
    ax.legend(fontsize=7)
    ax.set_title("per-robot cost vs fleet size (measured, shared machine)")
    fig.tight_layout()
    p = os.path.join(out_dir, "sim_robots_vs_n.png")
    save_figure(fig, p)
    paths.append(p)
    return paths


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default=None, help="policy program (default: the bundled pendulum policy)")
    p.add_argument("--peers", default=None, help="peers .npz (default: the bundled one)")
    p.add_argument("--deterministic", action="store_true",
                   help="model latency per K from the program's profile; sim time not tied to wall time")
    p.add_argument("--json", default=None, metavar="FILE", help="write one row per contender (and the details)")
    p.add_argument("--plots", default=None, metavar="DIR", help="write sim_*.png plots into DIR")
    p.add_argument("--robots", type=int, default=16, help="fleet size stepped as one engine batch under load")
    p.add_argument("--ticks", type=int, default=1000, help="episode length in control ticks")
    p.add_argument("--episodes", type=int, default=32, help="episodes per K in the sweep and per peer")
    p.add_argument("--rate-hz", type=float, default=200.0, help="control rate")
    p.add_argument("--scenarios", default="step,bursts,random", help="load schedules, comma separated")
    p.add_argument("--level", type=int, default=2, help="load level at peak (spinner processes in wall-clock mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline-factor", type=float, default=None,
                   help="inference deadline per tick = this x the profiled K̄ latency (default 1.25 "
                        "deterministic, 2.0 wall clock)")
    p.add_argument("--push-n", type=float, default=0.0,
                   help="std (N) of random pushes on the upper pole, 1 Hz per robot, 50 ms each (0: none)")
    p.add_argument("--bundle", default=None, metavar="RUN_DIR",
                   help="instead: profile RUN_DIR/policy.essm and copy it and the peers into the package assets")


def check_args(a) -> None:
    """Refuse bad values before MuJoCo is imported or any episode runs (one-line errors in the CLI)."""
    from essm_stream.errors import ConfigError

    if a.deadline_factor is not None and not a.deadline_factor > 0:
        raise ConfigError(f"--deadline-factor must be > 0, got {a.deadline_factor}")
    if not a.push_n >= 0:
        raise ConfigError(f"--push-n must be >= 0, got {a.push_n}")
    if not 0 < a.rate_hz <= 100_000:
        raise ConfigError(f"--rate-hz must be in (0, 100000], got {a.rate_hz}")
    if a.level < 0:
        raise ConfigError(f"--level must be >= 0, got {a.level}")
    for name in ("robots", "ticks", "episodes"):
        if getattr(a, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(a, name)}")
    bad = [s for s in a.scenarios.split(",") if s and s not in SCENARIOS]
    if bad or not [s for s in a.scenarios.split(",") if s]:
        raise ConfigError(f"--scenarios: unknown scenario(s) {bad}; use a comma list of {', '.join(SCENARIOS)}")


SCENARIOS = ("step", "bursts", "random")


def run_from_args(a) -> int:
    import sys
    from essm_stream.errors import ESSMError
    try:
        check_args(a)
    except ESSMError as e:
        print(f"essm-stream sim: error: {e}", file=sys.stderr)
        return 2
    try:
        import mujoco  # noqa: F401
    except ImportError:
        print("essm-stream sim: error: needs MuJoCo: pip install 'essm-stream[sim]'", file=sys.stderr)
        return 2
    scen = [s for s in a.scenarios.split(",") if s]
    if a.bundle:
        prof = bundle(a.bundle)
        print(json.dumps({k: prof[k] for k in ("K", "success", "cost", "latency_s")}, indent=1))
        return 0
    program, _, peers_path = load_bundle(a.policy, a.peers)
    res = evaluate(program, peers_path, deterministic=a.deterministic, n=a.robots, ticks=a.ticks,
                   episodes=a.episodes, scenarios=scen, rate_hz=a.rate_hz, level=a.level, seed=a.seed,
                   deadline_factor=a.deadline_factor, push_n=a.push_n)
    print(report(res))
    if a.plots:
        for p in plots(res, a.plots):
            print("wrote", p)
    if a.json:
        from essm_stream.fileio import atomic_write_bytes
        detail = {k: v for k, v in res.items() if k != "traces"}
        atomic_write_bytes(a.json, json.dumps({"rows": rows_json(res), "detail": detail}, indent=1,
                                              default=float).encode())
        print("wrote", a.json)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sims.robot_sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_from_args(a)


if __name__ == "__main__":
    raise SystemExit(main())
