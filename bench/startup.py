"""Start-up cost of `essm-stream demo --fast`: cold (empty numba cache) and warm, and where it goes.

    python bench/startup.py                       # 3 interleaved rounds of cold + warm, this tree
    python bench/startup.py --trees . /tmp/old    # the same for several source trees, interleaved
    python bench/startup.py --compile             # per-kernel compile seconds of the demo's engine

Each sample is a fresh process running the demo (`cli.main(["demo", "--fast", "--quiet", ...])`)
with NUMBA_CACHE_DIR set to a new temporary directory (cold), then again with it filled (warm).
Reported per sample: CPU seconds (this process's user + sys, `time.process_time`) from process
start to the first audio chunk through the whole pipeline (frontend, engine, detector), and the
whole run's CPU (40 s of audio and the plot) from the parent's rusage. The child hooks
KeywordSpotter.process to read the clock, so trees that predate the demo's own "start-up:" line
are measured the same way. Run it in a quiet window (`/work/signals/quiet.sh`) and note the load.

`--compile` builds the demo's engine once on an empty cache and lists numba's own pipeline timings
per compiled function (`cres.metadata["pipeline_times"]`): type inference, lowering (numba's IR to
LLVM, LLVM's optimisation and machine code) and inlining, each including the functions it compiles
on the way (callees are listed too, so the entries overlap).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import time, sys, contextlib, io
import essm_stream.kws.spotter as spm
seen = []
orig = spm.KeywordSpotter.process
def process(self, chunk):
    out = orig(self, chunk)
    if not seen:
        seen.append(time.process_time())
    return out
spm.KeywordSpotter.process = process
from essm_stream import cli
with contextlib.redirect_stdout(io.StringIO()):
    rc = cli.main(["demo", "--fast", "--quiet", "--plot", sys.argv[1]])
print("STARTUP", seen[0] if seen else -1, rc)
"""

COMPILE = r"""
import gc, time
t0 = time.process_time()
from essm_stream.kws.spotter import KeywordSpotter
KeywordSpotter(None)
print(f"demo's KeywordSpotter (program load, engine, first step): {time.process_time() - t0:.2f} s CPU")
from numba.core.registry import CPUDispatcher
rows = []
for o in gc.get_objects():
    if isinstance(o, CPUDispatcher):
        for cres in o.overloads.values():
            pt = (cres.metadata or {}).get("pipeline_times", {})
            parts = {}
            for stages in pt.values():
                for name, tm in stages.items():
                    key = name.split("_", 1)[1]
                    parts[key] = parts.get(key, 0.0) + tm.init + tm.run + tm.finalize
            rows.append((sum(parts.values()), o.py_func.__name__, parts))
for total, name, parts in sorted(rows, key=lambda r: -r[0]):
    if total >= 0.02:
        top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3])
        print(f"  {total:6.2f} s  {name:22s} ({top})")
"""


def sample(tree: str, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.path.abspath(tree))
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    with tempfile.TemporaryDirectory() as tmp:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([sys.executable, "-c", CHILD, os.path.join(tmp, "demo.png")], env=env,
                           cwd=os.path.abspath(tree), capture_output=True, text=True, timeout=900)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("STARTUP")]
    if r.returncode != 0 or not line:
        raise RuntimeError(f"demo in {tree} failed: {r.stderr[-1500:]}")
    return {"startup_cpu_s": float(line[-1].split()[1]),
            "run_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "load_1m": os.getloadavg()[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", nargs="+", default=[os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
                   help="source trees (each with essm_stream/) to measure, interleaved")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="per-kernel compile seconds instead")
    p.add_argument("--json", help="write every sample here")
    a = p.parse_args(argv)
    if a.compile:
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=os.path.abspath(a.trees[0]))
            return subprocess.run([sys.executable, "-c", COMPILE], env=env).returncode
    res = {t: {"cold": [], "warm": []} for t in a.trees}
    for r in range(a.rounds):
        for t in a.trees:
            with tempfile.TemporaryDirectory() as cache:
                for kind in ("cold", "warm"):
                    s = sample(t, cache)
                    res[t][kind].append(s)
                    print(f"round {r + 1} {t} {kind}: start-up {s['startup_cpu_s']:.2f} s CPU, whole run "
                          f"{s['run_cpu_s']:.2f} s CPU (load {s['load_1m']:.2f})", flush=True)
    for t in a.trees:
        for kind in ("cold", "warm"):
            up = [s["startup_cpu_s"] for s in res[t][kind]]
            run = [s["run_cpu_s"] for s in res[t][kind]]
            print(f"{t} {kind}: start-up median {statistics.median(up):.2f} s CPU [{min(up):.2f}-{max(up):.2f}], "
                  f"whole run {statistics.median(run):.2f} s [{min(run):.2f}-{max(run):.2f}] (n={len(up)})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
