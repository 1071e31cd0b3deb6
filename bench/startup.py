"""Start-up cost of `essm-stream demo --fast`: cold (empty numba cache) and warm, and where it goes.

    python bench/startup.py                           # 3 interleaved rounds of cold + warm, this tree
    python bench/startup.py --trees . /tmp/old        # the same for several source trees, interleaved
    python bench/startup.py --modes background,first  # the background compile against compiling first
    python bench/startup.py --avx2                    # under AVX2 emulation (numba for Haswell, ...)
    python bench/startup.py --compile                 # compile seconds per kernel of the demo's engine
    python bench/startup.py --latency --seconds 12    # real-time pipeline latency during the compile
    python bench/startup.py --breakdown --modes first,background   # CPU per start-up stage
    python bench/startup.py --step --trees /tmp/old . [--avx2]      # the demo's compiled step, per K

Each sample is a fresh process running the demo (`cli.main(["demo", "--fast", "--quiet", ...])`)
with NUMBA_CACHE_DIR set to a new temporary directory (cold), then again with it filled (warm). Each
tree's bytecode is written first (prime_bytecode: an installed package has its .pyc files), and the
children run without PYTHONDONTWRITEBYTECODE.
Reported per sample: CPU seconds (every thread, `time.process_time`) from process start to the
first audio chunk through the whole pipeline (frontend, engine, detector); the whole run's CPU
(40 s of audio and the plot) from the parent's rusage; and, from the demo's own summary where it
prints them (trees with the background compile), the compile thread's CPU and the start-up with
that compile added (the demo's main thread to the first chunk + the compile: the cost moved into
the background, not removed). The child hooks KeywordSpotter.process to read the clock, so trees
that predate the demo's "start-up:" line are measured the same way. Modes: `background` (the
demo's default: the numba kernel compiles in a thread while the numpy reference kernel steps) and
`first` (`--compile-first`: compiled before the stream starts, as before); a tree without that
option runs its own way in both. Run it in a quiet window (`/work/signals/quiet.sh`), note the load.

`--avx2` emulates an AVX2-only CPU (the issue's machine kind) on an AVX-512 one: numba compiles for
Haswell without extra features, OpenBLAS and torch use their AVX2 kernels (NUMBA_CPU_NAME=haswell
NUMBA_CPU_FEATURES= OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512 ATEN_CPU_CAPABILITY=avx2); every
sample has its own cache directory either way, so the two never share machine code.

`--compile` builds the demo's engine once on an empty cache and lists, per compiled function, the
CPU seconds numba spent compiling it exclusive of the functions it compiled on the way (from
numba's "numba:compile" events), and the time spent in LLVM (the "numba:llvm_lock" events).

`--step` times the compiled B=1 step of the demo's program (the bundled keyword model) per budget K in
fresh processes, trees interleaved and their order reversed every other round, each tree with its own
cache filled first: what a change of the demo's kernel does to its speed (µs a step, the median of 5
timings of 2000 steps after 1500; median [min-max] over the processes).

`--latency` runs the demo's pipeline (bundled recording, energy-aware controller) paced in real
time on an empty cache and reports, for the chunks processed while the kernel compiled in the
background and for those after, the wall time of each chunk's processing and how far behind the
real-time schedule the consumer fell (a microphone's ring absorbs that backlog; chunks are dropped
only when it exceeds the ring).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile

AVX2_ENV = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "", "OPENBLAS_CORETYPE": "Haswell",
            "OPENBLAS_L2_SIZE": "512", "ATEN_CPU_CAPABILITY": "avx2"}

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
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = cli.main(["demo", "--fast", "--quiet", "--plot", sys.argv[1]] + sys.argv[2:])
print(buf.getvalue())
print("STARTUP", seen[0] if seen else -1, rc)
"""

COMPILE = r"""
import time, collections
c0 = time.process_time()
from numba.core import event as ev
recs = []
class Rec(ev.Listener):
    def on_start(self, e): recs.append((time.thread_time(), 1, e.kind, e.data))
    def on_end(self, e): recs.append((time.thread_time(), 0, e.kind, e.data))
for kind in ("numba:compile", "numba:llvm_lock"):
    ev.register(kind, Rec())
from essm_stream.kws.spotter import KeywordSpotter
t0 = time.process_time()
KeywordSpotter(None)
t1 = time.process_time()
stack, excl, llvm, l0 = [], collections.Counter(), 0.0, 0.0
for tc, start, kind, data in recs:
    if kind == "numba:llvm_lock":
        if start: l0 = tc
        else: llvm += tc - l0
        continue
    if start:
        if stack: excl[stack[-1][0]] += tc - stack[-1][1]
        stack.append([data["dispatcher"].py_func.__name__, tc])
    else:
        name, s = stack.pop(); excl[name] += tc - s
        if stack: stack[-1][1] = tc
print(f"demo's KeywordSpotter (program load, engine, kernel compiled): {t1 - t0:.2f} s CPU "
      f"(imports before it {t0 - c0:.2f} s)")
print(f"  compiling {sum(excl.values()):.2f} s CPU in {len(excl)} functions, of which LLVM {llvm:.2f} s; "
      "per function, exclusive of its callees:")
for name, v in excl.most_common():
    if v >= 0.02:
        print(f"    {v:5.2f} s  {name}")
"""

BREAKDOWN = r"""
import sys, time
from essm_stream.commands.demo import _process_start_wall
marks = [("interpreter and site (process start -> this script)", time.thread_time(), time.process_time())]
def mark(what):   # this (the main) thread's CPU, and the process's (every thread: a compile runs beside)
    marks.append((what, time.thread_time(), time.process_time()))
import numpy
mark("import numpy")
from essm_stream import cli
mark("import essm_stream.cli")
from essm_stream.kws.evaluate import score_stream
from essm_stream.kws.sources import ArraySource
from essm_stream.kws.spotter import KeywordSpotter, load_program
from essm_stream.kws.control import kws_energy_controller
mark("import the demo's modules (spotter, sources, evaluate, control)")
prog = load_program(None)
mark("load the bundled program (imports numba, SciPy: the layout asks which BLAS kernels SciPy runs)")
from essm_stream.kws.frontend import make_frontend
fe = make_frontend(prog.frontend, normalize=True)
mark("frontend (onnxruntime import, two ONNX sessions)")
import numba
from essm_stream import engine
mark("import numba and the engine (numba_config, kernels)")
eng = engine.StreamEngine(prog, background_compile=(sys.argv[1] == "background"))
mark("StreamEngine(...) (" + sys.argv[1] + ")")
if sys.argv[1] != "background":
    eng.warmup()
    mark("engine.warmup(): kernel compiled or loaded")
sp = KeywordSpotter(prog, controller=kws_energy_controller(prog, fraction=0.5), record=True,
                    background_compile=(sys.argv[1] == "background"))
mark("KeywordSpotter(...) (a second frontend and engine: kernel in memory)")
from essm_stream.kws.recording import load_recording
pcm, _ = load_recording()
src = ArraySource(pcm, chunk=320)
mark("load the recording")
sp.process(next(iter(src)))
mark("first chunk through the pipeline")
prev = pprev = 0.0
print("  main thread / process CPU s")
for what, t, pt in marks:
    print(f"  {t - prev:6.3f} {pt - pprev:6.3f}  {what}")
    prev, pprev = t, pt
print(f"  {prev:6.3f} {pprev:6.3f}  in all")
c = eng.compile_info
if c is not None:
    eng.wait_compiled()
    c = eng.compile_info
    print(f"  kernel in the background thread: {c['cpu_s']:.3f} s CPU, {c['wall_s']:.3f} s wall ({c['source']})")
"""

STEP = r"""
import json, sys, time
import numpy as np
from essm_stream.kws.spotter import load_program
from essm_stream.engine import StreamEngine
prog = load_program(None)
e = StreamEngine(prog)
x = np.random.default_rng(0).standard_normal(prog.cfg.d_in).astype(np.float32)
res = {"kernel": e._kernel.py_func.__name__}
for K in map(int, sys.argv[1].split(",")):
    for _ in range(1500):
        e.step(x, K)
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(2000):
            e.step(x, K)
        ts.append((time.perf_counter() - t0) / 2000)
    res[str(K)] = float(np.median(ts))
print("STEP", json.dumps(res))
"""

LATENCY = r"""
import json, sys, time
import numpy as np
from essm_stream.kws.control import kws_energy_controller
from essm_stream.kws.recording import load_recording
from essm_stream.kws.sources import ArraySource
from essm_stream.kws.spotter import KeywordSpotter, load_program
seconds = float(sys.argv[1])
prog = load_program(None)
sp = KeywordSpotter(prog, controller=kws_energy_controller(prog, fraction=0.5), record=True,
                    background_compile=True)
pcm, _ = load_recording()
src = ArraySource(pcm, chunk=320, realtime=True)
t0, rows = time.perf_counter(), []
for i, chunk in enumerate(src):
    w = time.perf_counter()
    sp.process(chunk)
    end = time.perf_counter()
    rows.append((end - w, end - t0 - (i + 1) * 320 / 16000, sp.engine.compiled))
    if (i + 1) * 320 / 16000 >= seconds:
        break
sp.engine.wait_compiled()
print("LATENCY", json.dumps({"rows": rows, "compile": sp.engine.compile_info}))
"""


def _env(tree: str, cache: str, avx2: bool) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.path.abspath(tree))
    env.pop("PYTHONDONTWRITEBYTECODE", None)   # (an installed package has its bytecode: see prime_bytecode)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    if avx2:
        env.update(AVX2_ENV)
    return env


def prime_bytecode(tree: str) -> None:
    """Write the bytecode (__pycache__, git-ignored) of the tree's packages before timing it, as
    `pip install` does: a process started with PYTHONDONTWRITEBYTECODE=1 (this workplace's shells set
    it) and no __pycache__ compiles the package's ≈ 50 modules from source at every start, ≈ 0.15-0.18 s
    of CPU on the Intel box of docs/PERFORMANCE.md "Session 13" that no installed copy pays. The
    children run without that variable, so whatever this misses is written by the first one."""
    tree = os.path.abspath(tree)
    pkgs = [os.path.join(tree, d) for d in sorted(os.listdir(tree))
            if os.path.isfile(os.path.join(tree, d, "__init__.py"))]
    if pkgs:
        subprocess.run([sys.executable, "-m", "compileall", "-q", *pkgs], check=True, capture_output=True)


def _has_compile_first(tree: str) -> bool:
    try:
        with open(os.path.join(tree, "essm_stream", "commands", "demo.py")) as f:
            return "--compile-first" in f.read()
    except OSError:
        return False


def sample(tree: str, cache: str, mode: str = "background", avx2: bool = False) -> dict:
    env = _env(tree, cache, avx2)
    extra = ["--compile-first"] if mode == "first" and _has_compile_first(tree) else []
    with tempfile.TemporaryDirectory() as tmp:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([sys.executable, "-c", CHILD, os.path.join(tmp, "demo.png")] + extra, env=env,
                           cwd=os.path.abspath(tree), capture_output=True, text=True, timeout=900)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("STARTUP")]
    if r.returncode != 0 or not line:
        raise RuntimeError(f"demo in {tree} failed: {r.stderr[-1500:]}")
    out = {"startup_cpu_s": float(line[-1].split()[1]),
           "run_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
           "load_1m": os.getloadavg()[0]}
    m = re.search(r"engine kernel: ([0-9.]+) s CPU .*?; start-up with it: ([0-9.]+) s CPU", r.stdout)
    if m is not None:
        out["compile_cpu_s"], out["with_compile_cpu_s"] = float(m.group(1)), float(m.group(2))
    m = re.search(r"whole run: ([0-9.]+) s CPU", r.stdout)
    if m is not None:
        out["whole_cpu_s_before_plot"] = float(m.group(1))
    return out


def _stats(xs) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def latency(tree: str, seconds: float, avx2: bool) -> int:
    with tempfile.TemporaryDirectory() as cache:
        r = subprocess.run([sys.executable, "-c", LATENCY, str(seconds)], env=_env(tree, cache, avx2),
                           cwd=os.path.abspath(tree), capture_output=True, text=True, timeout=900)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("LATENCY")]
    if r.returncode != 0 or not line:
        raise RuntimeError(f"latency run failed: {r.stderr[-1500:]}")
    res = json.loads(line[-1].split(" ", 1)[1])
    rows, ci = res["rows"], res["compile"]
    print(f"kernel compile in the background: {ci['cpu_s']:.2f} s CPU, {ci['wall_s']:.2f} s wall, "
          f"handed over at hop {ci['handover_step']} ({ci['source']}); load {os.getloadavg()[0]:.2f}")
    for name, sel in (("while compiling", [r for r in rows if not r[2]]), ("after", [r for r in rows if r[2]])):
        if not sel:
            print(f"  {name}: no chunks")
            continue
        w = sorted(1e3 * r[0] for r in sel)
        late = max(1e3 * r[1] for r in sel)
        print(f"  {name}: {len(sel)} chunks of 20 ms; processing wall ms median {statistics.median(w):.2f}, "
              f"p99 {w[min(len(w) - 1, int(0.99 * len(w)))]:.2f}, max {w[-1]:.2f}; "
              f"largest backlog behind real time {max(late, 0.0):.1f} ms")
        worst = sorted(range(len(sel)), key=lambda i: -sel[i][0])[:4]
        print("    slowest chunks (index: ms): " + ", ".join(f"{rows.index(sel[i])}: {1e3 * sel[i][0]:.1f}" for i in worst))
    return 0


def steps(trees, rounds: int, ks: str, avx2: bool) -> int:
    caches = {t: tempfile.mkdtemp(prefix="essm-step-") for t in trees}
    res = {t: {} for t in trees}
    try:
        for t in trees:   # (fill each tree's cache: the processes below time the step, not the compile)
            subprocess.run([sys.executable, "-c", STEP, "1"], env=_env(t, caches[t], avx2), cwd=os.path.abspath(t),
                           capture_output=True, check=True, timeout=900)
        for r in range(rounds):
            for t in (trees if r % 2 == 0 else trees[::-1]):
                out = subprocess.run([sys.executable, "-c", STEP, ks], env=_env(t, caches[t], avx2),
                                     cwd=os.path.abspath(t), capture_output=True, text=True, timeout=900)
                line = [ln for ln in out.stdout.splitlines() if ln.startswith("STEP")]
                if out.returncode != 0 or not line:
                    raise RuntimeError(f"step in {t} failed: {out.stderr[-1500:]}")
                v = json.loads(line[-1].split(" ", 1)[1])
                print(f"round {r + 1} {t} ({v['kernel']}, load {os.getloadavg()[0]:.2f}): " + ", ".join(
                    f"K={k} {1e6 * v[k]:.2f} us" for k in ks.split(",")), flush=True)
                for k in ks.split(","):
                    res[t].setdefault(k, []).append(1e6 * v[k])
    finally:
        import shutil
        for c in caches.values():
            shutil.rmtree(c, ignore_errors=True)
    print(f"the demo's step, µs, medians [min-max] over {rounds} processes{' (AVX2 emulated)' if avx2 else ''}:")
    for t in trees:
        print(f"  {t}: " + ", ".join(f"K={k} {_stats(v)}" for k, v in res[t].items()))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", nargs="+", default=[os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
                   help="source trees (each with essm_stream/) to measure, interleaved")
    p.add_argument("--modes", default="background", help="comma-separated: background, first")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--avx2", action="store_true", help="emulate an AVX2-only CPU (see the module doc)")
    p.add_argument("--compile", action="store_true", help="per-kernel compile seconds instead")
    p.add_argument("--latency", action="store_true", help="real-time pipeline latency during the compile instead")
    p.add_argument("--breakdown", action="store_true",
                   help="CPU seconds of each start-up stage of the demo's pipeline (one process per mode, warm "
                        "and cold) instead")
    p.add_argument("--step", action="store_true", help="the demo program's compiled step per K instead (warm caches)")
    p.add_argument("--ks", default="1,4,16,32", help="--step: comma-separated budgets")
    p.add_argument("--seconds", type=float, default=12.0, help="--latency: seconds of audio")
    p.add_argument("--json", help="write every sample here")
    a = p.parse_args(argv)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not modes or any(m not in ("background", "first") for m in modes):
        p.error(f"--modes takes background and/or first, got {a.modes!r}")
    for t in a.trees:
        prime_bytecode(t)
    if a.compile:
        with tempfile.TemporaryDirectory() as cache:
            return subprocess.run([sys.executable, "-c", COMPILE], env=_env(a.trees[0], cache, a.avx2),
                                  cwd=os.path.abspath(a.trees[0])).returncode   # (-c puts the cwd first on sys.path)
    if a.latency:
        return latency(a.trees[0], a.seconds, a.avx2)
    if a.step:
        return steps(a.trees, a.rounds, a.ks, a.avx2)
    if a.breakdown:
        for m in modes:
            with tempfile.TemporaryDirectory() as cache:
                for kind in ("cold", "warm"):
                    print(f"{m} compile, {kind} cache (load {os.getloadavg()[0]:.2f}):", flush=True)
                    subprocess.run([sys.executable, "-c", BREAKDOWN, m], env=_env(a.trees[0], cache, a.avx2),
                                   cwd=os.path.abspath(a.trees[0]), check=True)
        return 0
    keys = [(t, m) for t in a.trees for m in (modes if _has_compile_first(t) else ["own"])]   # (older trees: one way)
    res = {f"{t} {m}": {"cold": [], "warm": []} for t, m in keys}
    for r in range(a.rounds):
        for t, m in keys:
            with tempfile.TemporaryDirectory() as cache:
                for kind in ("cold", "warm"):
                    s = sample(t, cache, m, a.avx2)
                    res[f"{t} {m}"][kind].append(s)
                    extra = "" if "compile_cpu_s" not in s else \
                        f", compile {s['compile_cpu_s']:.2f} s, start-up + compile {s['with_compile_cpu_s']:.2f} s"
                    print(f"round {r + 1} {t} {m} {kind}: start-up {s['startup_cpu_s']:.2f} s CPU{extra}, whole run "
                          f"{s['run_cpu_s']:.2f} s CPU (load {s['load_1m']:.2f})", flush=True)
    print(f"medians [min-max] over {a.rounds} interleaved rounds, CPU s{' (AVX2 emulated)' if a.avx2 else ''}:")
    for key, v in res.items():
        for kind in ("cold", "warm"):
            s = v[kind]
            txt = f"{key} {kind}: start-up {_stats([x['startup_cpu_s'] for x in s])}"
            if all("with_compile_cpu_s" in x for x in s):
                txt += (f", compile {_stats([x['compile_cpu_s'] for x in s])}, start-up + compile "
                        f"{_stats([x['with_compile_cpu_s'] for x in s])}")
            txt += f", whole run {_stats([x['run_cpu_s'] for x in s])}"
            print(txt + f", load {_stats([x['load_1m'] for x in s])}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
