"""Does replay predict reality? Live runs of the controllers next to replays of traces recorded under
the same kind of load, with the noise of each side measured the same way (two live runs; two
independent recordings).

    python -m sims.live_vs_replay --rt --suffix=-rt --repeats 2 --duration 4     # SCHED_FIFO loop
    python -m sims.live_vs_replay --suffix= --repeats 2 --duration 4             # ordinary (CFS) loop
    python -m sims.live_vs_replay --model-check                                  # no live runs: see below

Live: `sims.control_eval.run_eval` (memcpy loops on the engine's core, the step and random schedules,
deadline 2 x the unloaded paced median at K̄, measured at the start of each run). Replay: the traces
`memcpy-step{suffix}[-b]` and `memcpy-random{suffix}[-b]` (same load, same schedule shapes; both
independent recordings) from each directory given.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os

import numpy as np

SCEN = {"step": "memcpy-step", "random": "memcpy-random"}
SHOW = ("fixed K=8", "fixed K=16", "fixed K=32", "latency PI", "pred & PI, floor", "tail, floor", "energy")
MODEL_PAIRS = ((1, 32), (32, 1), (4, 24), (24, 4))


def model_check(paths, quantiles=(99.0, 99.5)) -> dict:
    """How well does replay's slowdown model carry a step recorded at one K over to another K?
    The recorder drew K at random per step, so the steps recorded at K = hi are a sample of the real
    latency at hi, and the steps recorded at K = lo, replayed at hi, are the model's guess of it.
    Two models (controllers.replay): multiplicative (lat(hi)·s_t) and delay (lat(hi)·b_t + d_t,
    `body_and_delay`). Returns per model the ratios model / real of the tail quantiles over every
    trace and pair."""
    from controllers.replay import LoadTrace, body_and_delay
    out = {"multiplicative": [], "body + delay": []}
    for p in paths:
        tr = LoadTrace.load(p)
        if tr.profile_latency is None or "seed" not in tr.meta:
            continue
        ks, lat_s = tr.profile_latency
        lat = dict(zip(ks, lat_s))
        k = tr.recorded_k()
        s = tr.slowdown
        b, d = body_and_delay(tr)
        for lo, hi in MODEL_PAIRS:
            if lo not in lat or hi not in lat:
                continue
            src, real = k == lo, s[k == hi] * lat[hi]
            for q in quantiles:
                r = np.percentile(real, q)
                out["multiplicative"].append(float(np.percentile(s[src] * lat[hi], q) / r))
                out["body + delay"].append(float(np.percentile(b[src] * lat[hi] + d[src], q) / r))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", nargs="+", default=["sims/traces"], help="directories holding recorded traces")
    p.add_argument("--suffix", default="-rt", help="trace name suffix to match (-rt: real-time recordings)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rt", action="store_true", help="live loop SCHED_FIFO 50, as the -rt traces were recorded")
    p.add_argument("--json", help="write the comparison here")
    p.add_argument("--replay-model", choices=("multiplicative", "delay"), default="multiplicative",
                   help="replay's model of how a recorded step carries over to another K")
    p.add_argument("--live-from", metavar="JSON",
                   help="no live runs: take the live rows from an earlier run's --json (replay them again, "
                        "e.g. with another --replay-model)")
    p.add_argument("--model-check", action="store_true",
                   help="no live runs: check replay's slowdown model across K on every trace in --traces")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.model_check:
        paths = sorted(f for d in a.traces for f in glob.glob(os.path.join(d, "*.npz")))
        res = model_check(paths)
        if not res["multiplicative"]:
            p.error(f"no traces with a latency profile and a seed in {a.traces}")
        print(f"tail latency carried from one recorded K to another (pairs {MODEL_PAIRS}, p99 and p99.5, "
              f"{len(paths)} traces): model / real")
        print("| model | median | 25-75% | mean abs log ratio |\n|---|---|---|---|")
        for n, v in res.items():
            v = np.array(v)
            q1, q3 = np.percentile(v, [25, 75])
            print(f"| {n} | {np.median(v):.2f} | {q1:.2f}-{q3:.2f} | {np.mean(np.abs(np.log(v))):.3f} |")
        return 0
    from sims.control_eval import run_eval, run_replay

    recordings = []                                  # one list of paths (one per scenario) per recording
    for d in a.traces:
        for rec in (".npz", "-b.npz"):
            paths = [os.path.join(d, f"{base}{a.suffix}{rec}") for base in SCEN.values()]
            if all(os.path.isfile(x) for x in paths):
                recordings.append(paths)
    if not recordings:
        p.error(f"no memcpy-step{a.suffix}[-b].npz / memcpy-random{a.suffix}[-b].npz in {a.traces}")
    live = []
    if a.live_from:
        with open(a.live_from) as f:
            old = json.load(f)
        n = min(len(r["live_miss"]) for r in old)
        for i in range(n):
            live.append({f"{r['scenario']}/{r['controller']}": {"miss_rate": r["live_miss"][i], "mean_k": r["live_k"][i]}
                         for r in old})
    for i in range(0 if a.live_from else a.repeats):
        res = run_eval(None, duration_s=a.duration, load_kind="memory", workers=2, scenario_names=tuple(SCEN),
                       fixed_ks=[8, 16, 32], out_dir=None, plot=False, rt=a.rt, progress=False)
        live.append({k: {"miss_rate": r["miss_rate"], "mean_k": r["mean_k"]} for k, r in res["runs"].items()})
    rep = []
    for paths in recordings:
        res = run_replay(paths, curves=("synthetic",), progress=False, model=a.replay_model)
        out = {}
        for r in res["rows"]:
            s = next(k for k, v in SCEN.items() if r["trace"].startswith(v))
            out[f"{s}/{r['controller']}"] = {"miss_rate": r["miss_rate"], "mean_k": r["mean_k"]}
        rep.append(out)
    lines = ["| scenario | controller | live miss (runs) | replay miss (recordings) | live mean K | replay mean K |",
             "|---|---|---|---|---|---|"]
    rows = []
    for s in SCEN:
        for c in SHOW:
            key = f"{s}/{c}"
            lm = [x[key]["miss_rate"] for x in live if key in x]
            rm = [x[key]["miss_rate"] for x in rep if key in x]
            lk = [x[key]["mean_k"] for x in live if key in x]
            rk = [x[key]["mean_k"] for x in rep if key in x]
            if not lm or not rm:
                continue
            rows.append({"scenario": s, "controller": c, "live_miss": lm, "replay_miss": rm, "live_k": lk, "replay_k": rk})
            lines.append(f"| {s} | {c} | {' / '.join(f'{100 * v:.2f}%' for v in lm)} | "
                         f"{' / '.join(f'{100 * v:.2f}%' for v in rm)} | {' / '.join(f'{v:.1f}' for v in lk)} | "
                         f"{' / '.join(f'{v:.1f}' for v in rk)} |")
    print("\n".join(lines))
    d_lr = [abs(np.mean(r["live_k"]) - np.mean(r["replay_k"])) for r in rows]
    n_l = [abs(r["live_k"][0] - r["live_k"][-1]) for r in rows]
    n_r = [abs(r["replay_k"][0] - r["replay_k"][-1]) for r in rows]
    print(f"\nmean K: |live - replay| median {np.median(d_lr):.2f}; run-to-run spread live median {np.median(n_l):.2f}, "
          f"recording-to-recording spread replay median {np.median(n_r):.2f}")
    m_lr = [abs(np.mean(r["live_miss"]) - np.mean(r["replay_miss"])) for r in rows]
    m_l = [abs(r["live_miss"][0] - r["live_miss"][-1]) for r in rows]
    m_r = [abs(r["replay_miss"][0] - r["replay_miss"][-1]) for r in rows]
    print(f"miss rate (points): |live - replay| median {100 * np.median(m_lr):.3f}; run-to-run spread live median "
          f"{100 * np.median(m_l):.3f}, recording-to-recording spread replay median {100 * np.median(m_r):.3f}")
    ad = [r for r in rows if not r["controller"].startswith("fixed")]
    if ad:
        def spread(v):
            return abs(v[0] - v[-1])
        within = sum(abs(np.mean(r["live_miss"]) - np.mean(r["replay_miss"]))
                     <= max(spread(r["live_miss"]), spread(r["replay_miss"])) for r in ad)
        print(f"adaptive rows: miss |live - replay| median "
              f"{100 * np.median([abs(np.mean(r['live_miss']) - np.mean(r['replay_miss'])) for r in ad]):.2f} pts, "
              f"live spread {100 * np.median([spread(r['live_miss']) for r in ad]):.2f}, recording spread "
              f"{100 * np.median([spread(r['replay_miss']) for r in ad]):.2f}; mean K |live - replay| median "
              f"{np.median([abs(np.mean(r['live_k']) - np.mean(r['replay_k'])) for r in ad]):.1f}, live spread "
              f"{np.median([spread(r['live_k']) for r in ad]):.1f}, recording spread "
              f"{np.median([spread(r['replay_k']) for r in ad]):.1f}; live-vs-replay miss difference within the "
              f"larger spread: {within} of {len(ad)}")
    if not a.live_from:
        print(f"load average (1, 5, 15 min) at the end: {[round(v, 2) for v in os.getloadavg()]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
