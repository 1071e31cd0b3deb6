"""Does replay predict reality? Live runs of the controllers next to replays of traces recorded under
the same kind of load, with the noise of each side measured the same way (two live runs; two
independent recordings).

    python -m sims.live_vs_replay --rt --traces sims/traces /tmp/traces_b --repeats 2 --duration 4

Live: `sims.control_eval.run_eval` (memcpy loops on the engine's core, the step and random schedules,
deadline 2 x the unloaded paced median at K̄, measured at the start of each run). Replay: the traces
`memcpy-step*` and `memcpy-random*` (same load, same schedule shapes) from each directory given.
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", nargs="+", required=True, help="directories holding recorded traces")
    p.add_argument("--suffix", default="-rt", help="trace name suffix to match (-rt: real-time recordings)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rt", action="store_true", help="live loop SCHED_FIFO 50, as the -rt traces were recorded")
    p.add_argument("--json", help="write the comparison here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from sims.control_eval import run_eval, run_replay

    live = []
    for i in range(a.repeats):
        res = run_eval(None, duration_s=a.duration, load_kind="memory", workers=2, scenario_names=tuple(SCEN),
                       fixed_ks=[8, 16, 32], out_dir=None, plot=False, rt=a.rt, progress=False)
        live.append({k: {"miss_rate": r["miss_rate"], "mean_k": r["mean_k"]} for k, r in res["runs"].items()})
    rep = []
    for d in a.traces:
        paths = []
        for s, base in SCEN.items():
            m = [f for f in glob.glob(os.path.join(d, f"{base}{a.suffix}*.npz"))
                 if os.path.basename(f)[len(base) + len(a.suffix):] in (".npz", "-b.npz")]
            paths += sorted(m)[:1]
        res = run_replay(paths, curves=("synthetic",), progress=False)
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
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
