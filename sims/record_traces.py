"""Record per-step slowdown traces of the engine under real co-running loads (for `control-eval --replay`).

For every load (memcpy, ALU spinners at nice 0 / 10 / 19, a second engine, page-cache pressure,
nothing of our own) and its schedule (step, bursts, random), the edge program steps in a paced loop
at a seeded random K per step; the slowdown s_t = latency_t / the unloaded paced median latency of
that K (measured at the start of the session, stored in the trace) is written with the CPU telemetry
readable at that step (core utilisation, PSI stall fraction, run queue) and the load level.

    python -m sims.record_traces --out sims/traces --duration 5 --seed 0                         # tune set
    python -m sims.record_traces --out sims/traces --duration 5 --seed 100 --suffix=-b --split held-out
    (and the same with --rt --suffix=-rt / -rt-b --seed 50 / 150 for the SCHED_FIFO loop)

The machine this ran on is part of the record (`meta["machine"]`): on a shared box other people's
work is co-running load too, and the traces say so.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time

import numpy as np

log = logging.getLogger(__name__)

# a second engine as co-running load: the same edge program stepped back to back in another process
ENGINE_SCRIPT = ("import os,sys,time\n"
                 "c=int(sys.argv[1]);T=float(sys.argv[2])\n"
                 "try: os.sched_setaffinity(0,{c}) if c>=0 else None\n"
                 "except (AttributeError,OSError): pass\n"
                 "import numpy as np\n"
                 "from sims.control_eval import edge_program\n"
                 "from essm_stream.engine import StreamEngine\n"
                 "e=StreamEngine(edge_program(1));x=np.ones(e.d_in,np.float32)\n"
                 "end=time.monotonic()+T\n"
                 "while time.monotonic()<end:\n"
                 "  for _ in range(50): e.step(x,32)\n")

# name: (load kind, workers, nice, schedule, label)
LOADS = {
    "memcpy-step": ("memory", 2, 0, "step", "2 x 32 MiB memcpy loops on the engine's core, on from 30% to 70%"),
    "memcpy-random": ("memory", 2, 0, "random", "0-2 memcpy loops, random levels, exponential holds"),
    "spin0-bursts": ("spin", 2, 0, "bursts", "2 ALU spinners at nice 0, on half of every quarter"),
    "spin10-random": ("spin", 2, 10, "random", "0-2 ALU spinners at nice 10, random levels"),
    "spin19-step": ("spin", 2, 19, "step", "2 ALU spinners at nice 19, on from 30% to 70%"),
    "engine2-bursts": ("engine", 1, 0, "bursts", "a second engine (same program, K=32, back to back), bursts"),
    "pagecache-random": ("pagecache", 2, 0, "random", "0-2 write 48 MiB / fsync / drop / read loops, random"),
    "ambient": (None, 0, 0, "none", "no load of our own (the quiet window: whatever else ran on the box)"),
}


def schedule(kind: str, duration_s: float, level: int, seed: int):
    from controllers.loadgen import burst_schedule, random_schedule, step_schedule
    if kind == "step":
        return step_schedule(0.3 * duration_s, 0.7 * duration_s, level)
    if kind == "bursts":
        return burst_schedule(duration_s / 4, 0.5, level, t_start=0.125 * duration_s)
    if kind == "random":
        return random_schedule(duration_s, seed=seed, max_level=level, mean_hold_s=duration_s / 10)
    return lambda t: 0


def record_one(eng, lat0: dict, name: str, *, duration_s: float, period_s: float, core: int, seed: int,
               warmup: int = 20):
    from controllers import CpuMonitor
    from controllers.loadgen import CpuLoad
    from controllers.replay import LoadTrace

    kind, workers, nice, sched_kind, label = LOADS[name]
    ks = np.array(lat0["K"])
    base = dict(zip(lat0["K"], lat0["latency_s"]))
    n = int(duration_s / period_s) + warmup         # the first `warmup` steps (the loop's cold start) are dropped
    rng = np.random.default_rng(seed)
    k_seq = rng.choice(ks, size=n)
    x = np.random.default_rng(seed).standard_normal(eng.d_in).astype(np.float32)
    cols = {c: np.full(n, np.nan) for c in ("cpu_util", "psi_some_frac", "run_queue", "load")}
    late = np.zeros(n)
    slow = np.empty(n)
    mon = CpuMonitor(cpus=[core], min_interval_s=0.005)
    load = None
    if kind is not None:
        load = CpuLoad(core=core, max_workers=workers, max_s=duration_s + 30, nice=nice,
                       kind="spin" if kind == "engine" else kind,
                       script=ENGINE_SCRIPT if kind == "engine" else None).start()
        time.sleep(1.0 if kind == "engine" else 0.2)         # let the second engine compile / load
    load_avg_before = os.getloadavg()
    sched = schedule(sched_kind, duration_s, max(workers, 1), seed)
    try:
        mon.read()
        t0 = time.perf_counter()
        nxt = t0
        for i in range(n):
            nxt += period_s
            wait = nxt - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif wait < -period_s:
                nxt = time.perf_counter()
            level = sched(time.perf_counter() - t0)
            if load is not None:
                load.set_level(level)
            k = int(k_seq[i])
            a = time.perf_counter_ns()
            eng.step(x, k)
            lat = (time.perf_counter_ns() - a) * 1e-9
            slow[i] = lat / base[k]
            r = mon.read()
            late[i] = time.perf_counter() - t0 - (i + 1) * period_s
            cols["load"][i] = level
            for c in ("cpu_util", "psi_some_frac", "run_queue"):
                if r.get(c) is not None:
                    cols[c][i] = r[c]
    finally:
        if load is not None:
            load.stop()
    load_avg_after = os.getloadavg()
    slow, late = slow[warmup:], late[warmup:]
    cols = {c: v[warmup:] for c, v in cols.items()}
    meta = {"name": name, "load": label, "load_kind": kind, "workers": workers, "nice": nice,
            "schedule": sched_kind, "duration_s": duration_s, "period_s": period_s, "core": core, "seed": seed,
            "latency_profile": {"K": lat0["K"], "latency_s": lat0["latency_s"],
                                "of": "median of paced steps per K at the start of the session (ambient load)"},
            "slowdown_of": "step latency / latency_profile at the K that ran (K drawn uniformly per step)",
            "loop_lateness_s": {"median": float(np.median(late)), "max": float(late.max())},
            "warmup_steps_dropped": warmup,
            "k_recorded": "not stored: np.random.default_rng(seed).choice(latency_profile['K'], "
                          "size=steps + warmup_steps_dropped)[warmup_steps_dropped:]",
            "load_average_1_5_15": {"before": [round(v, 2) for v in load_avg_before],
                                    "after": [round(v, 2) for v in load_avg_after]},
            "machine": {"machine": platform.machine(), "cpus": os.cpu_count(),
                        "note": MACHINE_NOTE, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "command": "python -m sims.record_traces"}
    return LoadTrace(slow, cols, meta)


MACHINE_NOTE = ("2-core VM, recorded inside a quiet window (/work/signals/quiet.sh: the background training job "
                "paused); other agents' short tests may have run; the load average before / after each "
                "recording is in load_average_1_5_15")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="sims/traces", help="directory for NAME.npz")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per trace")
    p.add_argument("--period", type=float, default=1e-3)
    p.add_argument("--core", type=int, default=0)
    p.add_argument("--loads", default=",".join(LOADS), help=f"comma-separated subset of {','.join(LOADS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--suffix", default="", help="appended to each file name (e.g. -b for a second recording)")
    p.add_argument("--split", choices=("tune", "held-out"), default="tune",
                   help="which half of the shipped set this recording is (controllers are tuned on 'tune' only)")
    p.add_argument("--rt", action="store_true",
                   help="run the engine loop SCHED_FIFO (priority 50), as a robot's control thread would; "
                        "the loads stay ordinary processes")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = [n for n in a.loads.split(",") if n]
    bad = [n for n in names if n not in LOADS]
    if bad:
        p.error(f"unknown loads {bad}; known: {', '.join(LOADS)}")
    from controllers.profile import PROFILE_KS, calibrate_latency
    from essm_stream.engine import StreamEngine
    from sims.control_eval import edge_program
    try:
        os.sched_setaffinity(0, {a.core})
    except (AttributeError, OSError) as e:
        log.warning("could not pin to core %d (%s)", a.core, e)
    if a.rt:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        except (AttributeError, OSError) as e:
            p.error(f"--rt: cannot switch to SCHED_FIFO ({e}); needs CAP_SYS_NICE")
    os.makedirs(a.out, exist_ok=True)
    eng = StreamEngine(edge_program())
    lat0 = calibrate_latency(eng, PROFILE_KS, steps=200, period_s=a.period)
    log.info("profile (µs): %s", [round(v * 1e6, 1) for v in lat0["latency_s"]])
    for i, n in enumerate(names):
        tr = record_one(eng, lat0, n, duration_s=a.duration, period_s=a.period, core=a.core, seed=a.seed + i)
        tr.meta["scheduling"] = "SCHED_FIFO 50 (real-time control thread)" if a.rt else "SCHED_OTHER nice 0"
        tr.meta["name"] = n + a.suffix
        tr.meta["split"] = a.split
        tr.meta["command"] = "python -m sims.record_traces " + " ".join(argv if argv is not None else sys.argv[1:])
        path = os.path.join(a.out, f"{n}{a.suffix}.npz")
        tr.save(path)
        s = tr.slowdown
        log.info("%s: %d steps, slowdown median %.2f p99 %.2f max %.1f -> %s (%d B)", n, len(s), np.median(s),
                 np.percentile(s, 99), s.max(), path, os.path.getsize(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
