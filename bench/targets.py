"""Issue 13's targets as pass / fall-short lines, every contender interleaved in one run.

    python bench/bench_engine.py --targets [--reps 7] [--json docs/perf_results.json]
    essm-stream bench --targets                      (the same through the CLI)
    python bench/bench_engine.py --plots docs/img    (time vs K, L and B: docs/img/perf_*.png)

Method. Each repetition (round) times every contender once, in a fixed order, back to back: the
engine and its peers at the same point see the same neighbours. A contender's sample in a round is
the median of `n` steps (after warm-up steps). Every ratio is formed inside a round (engine and peer
of the same round), and a target line prints the median ratio over the rounds and its spread
[min–max]. Peers: the tuned eager torch step (`peers.TunedTorchStep`) and ONNX Runtime with IO
binding (`peers.OnnxStep`), the fastest of each we have. Machine limits in the same rounds:
single-thread sgemm (numpy/OpenBLAS 1024³ float32 in a subprocess with one BLAS thread) and
single-thread read bandwidth at the size of the working set (a numba sum repeated over a buffer of
exactly that many bytes, so it is served from the cache level the working set lives in).
Start-up: `essm-stream demo --fast` in a fresh process with an empty numba cache directory (cold), then
again with that cache filled (warm); the lines read the demo's own summary: CPU seconds (every
thread) from process start to the first audio through the pipeline, and, since the demo compiles
the engine's kernel in a background thread while the numpy reference kernel steps, that start-up
with the whole compile's CPU added (what the compile costs, moved rather than removed).
"""
from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench_engine import CONFIGS, sgemm_gflops, step_cost

TARGETS = {  # name: (threshold, sense) -- sense '>=' or '<='
    "edge B=1 K=32 vs tuned torch": (5.0, ">="),
    "edge B=1 K=4 vs tuned torch": (15.0, ">="),
    "edge B=1 K=32 vs ONNX Runtime": (3.0, ">="),
    "edge B=1 K=32 % of sgemm": (55.0, ">="),
    "edge B=32 K=32 per-stream / B=1": (0.35, "<="),
    "edge B=32 K=32 % of sgemm": (60.0, ">="),
    "paper B=1 K=32 / memory floor": (1.5, "<="),
    "paper B=1 K=32 vs ONNX Runtime": (1.5, ">="),
    "cold start demo, to 1st chunk, CPU s": (5.0, "<="),
    "cold demo + background compile, CPU s": (5.0, "<="),
    "warm start demo, to 1st chunk, CPU s": (1.0, "<="),
}
# The same targets with N threads everywhere (the engine's threads=N, torch.set_num_threads(N), ONNX
# Runtime intra_op_num_threads=N, sgemm on N BLAS threads, the memory floor from an N-thread read of
# the same working set): "..., N threads each" lines beside the one-thread ones. Each peer / limit in
# those lines is the better of its 1-thread and N-thread runs in the round (what a user with N cores
# would run): a peer slower on N threads is not a fair opponent.
THREADED = ("edge B=1 K=32 vs tuned torch", "edge B=1 K=4 vs tuned torch", "edge B=1 K=32 vs ONNX Runtime",
            "edge B=1 K=32 % of sgemm", "edge B=32 K=32 per-stream / B=1", "edge B=32 K=32 % of sgemm",
            "paper B=1 K=32 / memory floor", "paper B=1 K=32 vs ONNX Runtime")
# engine threads=N against the engine's threads=1 in the same round (> 1: N threads are faster)
GAIN_POINTS = ("edge B=1 K=32", "edge B=1 K=4", "edge B=32 K=32", "paper B=1 K=32")


# The same B=1 / B=32 / paper targets for the program compiled with `--weights fp16` (mixing and MLP
# weights rounded to float16, read by the engine at half the bytes; docs/PERFORMANCE.md "Half-width
# mixing weights"): extra lines, labelled; the peers (tuned torch, ONNX Runtime) run the fp32 program,
# their fastest form, and the machine limits are the same.
FP16 = "fp16 weights: "
FP16_LINES = ("edge B=1 K=32 vs tuned torch", "edge B=1 K=4 vs tuned torch", "edge B=1 K=32 vs ONNX Runtime",
              "edge B=1 K=32 % of sgemm", "edge B=32 K=32 per-stream / B=1", "paper B=1 K=32 / memory floor",
              "paper B=1 K=32 vs ONNX Runtime")


def threaded_name(name: str, n: int) -> str:
    return f"{name}, {n} threads each"   # (peers and limits: the better of 1 and n threads)


def gain_name(point: str, n: int) -> str:
    return f"{point}: engine threads={n} / threads=1"


def make_program(name: str, seq_len: int | None = None):
    """The bench's program for a config (random weights, orthonormal filters; speed does not depend on them)."""
    from essm_stream.config import ESSMConfig
    from essm_stream.engine import tiny_program
    kw = dict(CONFIGS[name])
    if seq_len:
        kw["seq_len"] = seq_len
    return tiny_program(ESSMConfig(**kw), seed=0)


def _median_step(fn, frames, n: int, warm: int = 3) -> float:
    return float(np.median(_step_times(fn, frames, n, warm)))


def _step_times(fn, frames, n: int, warm: int = 3) -> np.ndarray:
    """Seconds of each of n steps (after `warm` untimed ones)."""
    for i in range(warm):
        fn(frames[i % len(frames)])
    pc = time.perf_counter_ns
    ts = np.empty(n)
    for i in range(n):
        x = frames[i % len(frames)]
        t0 = pc()
        fn(x)
        ts[i] = pc() - t0
    return ts / 1e9


def read_bandwidth_at(nbytes: int, min_s: float = 0.05, threads: int = 1) -> float:
    """Read bandwidth (GB/s) over a buffer of nbytes, read repeatedly: a buffer that fits a cache level
    is measured from that level. Best of 5 timings of >= min_s each. threads > 1: that many threads
    of numba's pool each read their own 1/threads of the buffer (the same working set in all)."""
    from numba import prange

    from essm_stream.numba_config import njit

    @njit(cache=False)
    def total1(a, reps, n):
        s = np.float32(0)
        for r in range(reps):
            for i in range(a.shape[0]):
                s += a[i]
        return s

    @njit(cache=False, parallel=True)
    def total_n(a, reps, n):
        m = a.shape[0] // n
        part = np.zeros(n, dtype=np.float32)
        for c in prange(n):
            x = a[c * m:(c + 1) * m]   # a slice: a flat a[i] with a run-time offset would not vectorize
            s = np.float32(0)
            for r in range(reps):
                for i in range(m):
                    s += x[i]
            part[c] = s
        return part.sum()

    total = total1 if threads == 1 else total_n
    a = np.ones(max(nbytes // 4, 1024), dtype=np.float32)
    total(a, 1, threads)
    reps = 1
    while True:
        t = time.perf_counter()
        total(a, reps, threads)
        dt = time.perf_counter() - t
        if dt >= min_s or reps > 1 << 20:
            break
        reps *= 2
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        total(a, reps, threads)
        best = max(best, reps * a.nbytes / (time.perf_counter() - t))
    return best / 1e9


def kernel_blas() -> str:
    """SciPy's BLAS, which the engine calls (numba's np.dot) only for products its register tile does not
    take (simd.py: windows narrower than a tile, long one-row windows, ESSM_CONV_SMALL_ROWS=1): library,
    version, the kernel it chose for this CPU, threads; and OPENBLAS_CORETYPE when it forces one."""
    try:
        import scipy
        from threadpoolctl import threadpool_info
        here = os.path.dirname(os.path.abspath(scipy.__file__))
        libs = [i for i in threadpool_info() if i.get("user_api") == "blas" and os.path.abspath(i["filepath"]).startswith(here)]
        txt = ", ".join(f"{i['internal_api']} {i['version']} ({i.get('architecture')} kernels, {i['num_threads']} thread)"
                        for i in libs) or "not loaded"
    except ImportError as e:
        txt = f"unknown ({e})"
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return txt + (f"; OPENBLAS_CORETYPE={forced} forces that core's kernels" if forced else "")


def demo_cpu_seconds(cache: str) -> dict:
    """CPU seconds (user + sys) and wall seconds of `essm-stream demo --fast` in a fresh process."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)   # (an installed package has its bytecode; start_costs writes it first)
    with tempfile.TemporaryDirectory() as tmp:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "essm_stream", "demo", "--fast", "--quiet",
                            "--plot", os.path.join(tmp, "demo.png")], env=env, capture_output=True, text=True,
                           timeout=900)
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"demo --fast failed: {r.stderr[-1000:]}")
    from essm_stream.commands.demo import COMPILE_RE, STARTUP_RE
    m = re.search(STARTUP_RE, r.stdout)
    if m is None:
        raise RuntimeError(f"demo --fast printed no start-up line: {r.stdout[-1000:]}")
    out = {"cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), "wall_s": wall,
           "startup_cpu_s": float(m.group(1)), "startup_wall_s": float(m.group(2))}
    m = re.search(COMPILE_RE, r.stdout)
    if m is not None:   # the kernel compiled in the background: its CPU and start-up + compile
        out["compile_cpu_s"], out["startup_with_compile_cpu_s"] = float(m.group(1)), float(m.group(2))
    return out


def start_costs(reps: int = 1) -> dict:
    import importlib.util
    # the packages' bytecode first, as an install has it (bench/startup.py prime_bytecode: without it a
    # shell with PYTHONDONTWRITEBYTECODE=1 compiles their ≈ 50 modules at every start, ≈ 0.15 s)
    specs = [importlib.util.find_spec(n) for n in ("essm_stream", "controllers")]
    dirs = [d for sp in specs if sp is not None for d in (sp.submodule_search_locations or [])]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=True, capture_output=True)
    cold, warm = [], []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(demo_cpu_seconds(cache))
            warm.append(demo_cpu_seconds(cache))
    return {"cold": cold, "warm": warm}


def _suffix(n: int) -> str:
    """Contender / sample names: no suffix for one thread (the names of earlier runs' JSON), else ' threads=N'."""
    return "" if n == 1 else f" threads={n}"


def measure(reps: int = 7, log=print, with_paper: bool = True, with_start: bool = True,
            threads: tuple = (1, 2), fp16: bool = True) -> dict:
    """threads: the thread counts N to measure; for each N > 1 the engine runs with threads=N and
    every peer and machine limit with N threads too (separate contenders, same rounds)."""
    import numba
    import torch

    from essm_stream.engine import StreamEngine
    from peers import OnnxStep, TunedTorchStep
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    edge, paper = make_program("edge"), (make_program("paper") if with_paper else None)
    c = {}     # contender name -> (step function, frames, steps per round, torch threads or None)

    def add_engine(tag, prog, B, K, n, th):
        eng = StreamEngine(prog, batch=B, dtype=np.float32, threads=th)
        eng.warmup()
        eng.run(rng.standard_normal((prog.cfg.seq_len + 1, B, prog.cfg.d_in)).astype(np.float32), prog.cfg.k_max)
        fr = [f for f in rng.standard_normal((16, B, prog.cfg.d_in)).astype(np.float32)]
        c[tag + _suffix(th)] = (lambda x: eng.step(x, K), fr, n, None)

    def add_torch(tag, prog, B, K, n, th):
        ts = TunedTorchStep(prog, B, K)
        fr = [torch.from_numpy(f) for f in rng.standard_normal((16, B, prog.cfg.d_in)).astype(np.float32)]
        c[tag + _suffix(th)] = (ts.step, fr, n, th)

    def add_onnx(tag, prog, B, K, n, th):
        on = OnnxStep(prog, B, K, threads=th)
        fr = [f for f in rng.standard_normal((16, B, prog.cfg.d_in)).astype(np.float32)]
        c[tag + _suffix(th)] = (on.step, fr, n, None)

    log("building contenders (engine, tuned torch, ONNX Runtime with IO binding; threads "
        + ", ".join(map(str, threads)) + ") ...")
    for th in threads:
        add_engine("engine edge B=1 K=32", edge, 1, 32, 400, th)
        add_engine("engine edge B=1 K=4", edge, 1, 4, 600, th)
        add_torch("torch edge B=1 K=32", edge, 1, 32, 200, th)
        add_torch("torch edge B=1 K=4", edge, 1, 4, 200, th)
        add_onnx("onnx edge B=1 K=32", edge, 1, 32, 200, th)
        add_engine("engine edge B=32 K=32", edge, 32, 32, 40, th)
        if with_paper:
            add_engine("engine paper B=1 K=32", paper, 1, 32, 20, th)
            add_onnx("onnx paper B=1 K=32", paper, 1, 32, 20, th)
    if fp16:   # the same programs with --weights fp16 (one thread; the peers keep the fp32 program)
        e16 = edge.with_mix_weights("fp16")
        add_engine("engine fp16 edge B=1 K=32", e16, 1, 32, 400, 1)
        add_engine("engine fp16 edge B=1 K=4", e16, 1, 4, 600, 1)
        add_engine("engine fp16 edge B=32 K=32", e16, 32, 32, 40, 1)
        if with_paper:
            add_engine("engine fp16 paper B=1 K=32", paper.with_mix_weights("fp16"), 1, 32, 20, 1)
    f_e1, b_e1 = step_cost(edge.cfg, 1, 32)
    f_e32, _ = step_cost(edge.cfg, 32, 32)
    b_p1 = step_cost(paper.cfg, 1, 32)[1] if with_paper else 0
    samples = {k: [] for k in c}
    for th in threads:
        sx = _suffix(th)
        samples.update({"sgemm_gflops" + sx: [], "bw_edge_gbs" + sx: [], "bw_paper_gbs" + sx: []})
    samples["loadavg_1m"] = []
    tails = {}   # contender -> per round [p99, max] of its steps (jitter)
    for r in range(reps):
        t0 = time.perf_counter()
        for th in threads:
            samples["sgemm_gflops" + _suffix(th)].append(sgemm_gflops(th))
        for tag, (fn, fr, n, tth) in c.items():
            torch.set_num_threads(tth or 1)
            ts = _step_times(fn, fr, n)
            samples[tag].append(float(np.median(ts)))
            tails.setdefault(tag, []).append([float(np.percentile(ts, 99)), float(ts.max())])
        torch.set_num_threads(1)
        for th in threads:
            samples["bw_edge_gbs" + _suffix(th)].append(read_bandwidth_at(int(b_e1), threads=th))
        samples["loadavg_1m"].append(os.getloadavg()[0])   # other jobs on the machine while this round ran
        if with_paper:
            for th in threads:
                samples["bw_paper_gbs" + _suffix(th)].append(read_bandwidth_at(int(b_p1), min_s=0.1, threads=th))
        log(f"round {r + 1}/{reps} ({time.perf_counter() - t0:.1f} s): " +
            ", ".join(f"{k} {v[-1] * 1e6:.0f} us" for k, v in samples.items() if k in c))
    S = {k: np.array(v) for k, v in samples.items()}
    # N threads: a user with N cores runs each peer the faster way, so its sample in a round is the
    # faster of its 1-thread and N-thread runs (torch's eager step is often slower on 2 threads);
    # likewise the machine limits are the better of 1 and N threads. The engine's own N-thread time
    # is never replaced (its threads=1 comparison is the GAIN lines).
    for th in threads:
        if th > 1:
            x = _suffix(th)
            for k in [k for k in S if k.endswith(x) and k.startswith(("torch", "onnx"))]:
                S[k + " best"] = np.minimum(S[k], S[k[:-len(x)]])
            for k in ("sgemm_gflops", "bw_edge_gbs", "bw_paper_gbs"):
                if len(S.get(k + x, [])):
                    S[k + x + " best"] = np.maximum(S[k + x], S[k])
    ratios = {}
    for th in threads:
        x = _suffix(th) if th == 1 else _suffix(th) + " best"
        e = _suffix(th)   # the engine's own samples
        nm = (lambda name: name) if th == 1 else (lambda name, th=th: threaded_name(name, th))
        ratios.update({
            nm("edge B=1 K=32 vs tuned torch"): S["torch edge B=1 K=32" + x] / S["engine edge B=1 K=32" + e],
            nm("edge B=1 K=4 vs tuned torch"): S["torch edge B=1 K=4" + x] / S["engine edge B=1 K=4" + e],
            nm("edge B=1 K=32 vs ONNX Runtime"): S["onnx edge B=1 K=32" + x] / S["engine edge B=1 K=32" + e],
            nm("edge B=1 K=32 % of sgemm"): 100 * f_e1 / S["engine edge B=1 K=32" + e] / (S["sgemm_gflops" + x] * 1e9),
            nm("edge B=32 K=32 per-stream / B=1"): S["engine edge B=32 K=32" + e] / 32 / S["engine edge B=1 K=32" + e],
            nm("edge B=32 K=32 % of sgemm"): 100 * f_e32 / S["engine edge B=32 K=32" + e] / (S["sgemm_gflops" + x] * 1e9),
        })
        if with_paper:
            ratios[nm("paper B=1 K=32 / memory floor")] = S["engine paper B=1 K=32" + e] / (b_p1 / (S["bw_paper_gbs" + x] * 1e9))
            ratios[nm("paper B=1 K=32 vs ONNX Runtime")] = S["onnx paper B=1 K=32" + x] / S["engine paper B=1 K=32" + e]
    b16 = 0.0
    if fp16:
        r16 = {
            "edge B=1 K=32 vs tuned torch": S["torch edge B=1 K=32"] / S["engine fp16 edge B=1 K=32"],
            "edge B=1 K=4 vs tuned torch": S["torch edge B=1 K=4"] / S["engine fp16 edge B=1 K=4"],
            "edge B=1 K=32 vs ONNX Runtime": S["onnx edge B=1 K=32"] / S["engine fp16 edge B=1 K=32"],
            "edge B=1 K=32 % of sgemm": 100 * f_e1 / S["engine fp16 edge B=1 K=32"] / (S["sgemm_gflops"] * 1e9),
            "edge B=32 K=32 per-stream / B=1": S["engine fp16 edge B=32 K=32"] / 32 / S["engine fp16 edge B=1 K=32"],
        }
        if with_paper:   # the floor of the fp16 program's own bytes (Mcat, fc1.W, fc2.W at 2 bytes a weight),
            b16 = step_cost(paper.cfg, 1, 32, mix_itemsize=2, mlp_itemsize=2)[1]   # same bandwidth
            r16["paper B=1 K=32 / memory floor"] = S["engine fp16 paper B=1 K=32"] / (b16 / (S["bw_paper_gbs"] * 1e9))
            r16["paper B=1 K=32 vs ONNX Runtime"] = S["onnx paper B=1 K=32"] / S["engine fp16 paper B=1 K=32"]
        ratios.update({FP16 + k: v for k, v in r16.items()})
    gains = {}
    for th in threads:
        if th > 1:
            for pt in GAIN_POINTS:
                if "engine " + pt in S and "engine " + pt + _suffix(th) in S:
                    gains[gain_name(pt, th)] = S["engine " + pt] / S["engine " + pt + _suffix(th)]
    try:
        layer = numba.threading_layer()
    except ValueError:   # no parallel region ran (threads=1 only)
        layer = None
    res = {"reps": reps, "samples_s": {k: list(v) for k, v in samples.items()}, "blas": kernel_blas(),
           "threads": list(threads), "tails_s": tails, "threading_layer": layer, "gains": {k: v.tolist() for k, v in gains.items()},
           "ratios": {k: v.tolist() for k, v in ratios.items()},
           "bytes": {"edge B=1 K=32": b_e1, "paper B=1 K=32": b_p1, "paper B=1 K=32 fp16": b16}, "flops": {"edge B=1 K=32": f_e1, "edge B=32 K=32": f_e32}}
    if with_start:
        log("start-up: demo --fast with an empty numba cache, then with it filled (3 rounds) ...")
        st = start_costs(reps=3)   # three fresh caches, each cold then warm
        res["start"] = st
        ratios["cold start demo, to 1st chunk, CPU s"] = np.array([s["startup_cpu_s"] for s in st["cold"]])
        ratios["cold demo + background compile, CPU s"] = np.array(
            [s.get("startup_with_compile_cpu_s", s["startup_cpu_s"]) for s in st["cold"]])
        ratios["warm start demo, to 1st chunk, CPU s"] = np.array([s["startup_cpu_s"] for s in st["warm"]])
        res["ratios"] = {k: np.asarray(v).tolist() for k, v in ratios.items()}
    return res


def _target(name: str):
    if name in TARGETS:
        return TARGETS[name]
    base = re.sub(r", \d+ threads each$", "", name)
    if base.startswith(FP16):
        base = base[len(FP16):]
    return TARGETS[base]


def _batch_bound_lines(res, S) -> list[str]:
    """The B=32 per-stream target against the machine's own compute limit: at 100% of the same
    round's single-thread sgemm, B=32 K=32 costs flops / sgemm; per stream and over B=1, that is the
    lowest ratio one thread can reach, so a faster B=1 raises it."""
    f32 = res.get("flops", {}).get("edge B=32 K=32")
    if not f32 or "sgemm_gflops" not in S:
        return []
    out = []
    for pre in ("", FP16):
        b1 = S.get("engine " + ("fp16 " if pre else "") + "edge B=1 K=32")
        if b1 is None or not len(b1):
            continue
        bound = f32 / (S["sgemm_gflops"] * 1e9) / 32 / b1
        out.append(f"(bound: {pre}edge B=32 K=32 per-stream / B=1 at 100% of the round's 1-thread sgemm would be "
                   f"{np.median(bound):.2f}x [{bound.min():.2f}-{bound.max():.2f}]: one thread cannot go below it)")
    f1, b1 = res.get("flops", {}).get("edge B=1 K=32"), res.get("bytes", {}).get("edge B=1 K=32")
    if f1 and b1 and "bw_edge_gbs" in S:   # a step no faster than reading its bytes once at the measured rate
        pct = 100 * f1 / (b1 / (S["bw_edge_gbs"] * 1e9)) / (S["sgemm_gflops"] * 1e9)
        out.append(f"(bound: edge B=1 K=32 % of sgemm at the memory floor (its {b1 / 1e6:.2f} MB read once at the "
                   f"round's rate) would be {np.median(pct):.1f}% [{pct.min():.1f}-{pct.max():.1f}]: the fp32 "
                   "program cannot exceed it)")
    return out


def lines(res) -> list[str]:
    out = []
    S = {k: np.array(v) for k, v in res["samples_s"].items()}
    for name, v in res["ratios"].items():
        v = np.asarray(v)
        thr, sense = _target(name)
        med = float(np.median(v))
        ok = med >= thr if sense == ">=" else med <= thr
        unit = "%" if "%" in name else ("s" if "CPU s" in name else "x")
        num = f"{med:.1f}{unit}" if unit != "x" else f"{med:.2f}x"
        spread = f"[{v.min():.2f}-{v.max():.2f}]" if unit == "x" else f"[{v.min():.1f}-{v.max():.1f}]"
        out.append(f"{'PASS      ' if ok else 'FALL SHORT'}  {name:50s} {num:>8s} {spread:>15s}  target {sense} {thr:g}"
                   f"{'' if unit == 'x' else unit}  (n={len(v)})")
    out += _batch_bound_lines(res, S)
    if any(th > 1 for th in res.get("threads", [1])):
        out.append("(lines '..., N threads each': the engine with threads=N; each peer and machine limit the better "
                   "of its 1-thread and N-thread runs in the same round)")
    if any(k.startswith(FP16) for k in res["ratios"]):
        out.append(f"(lines '{FP16}...': the engine, one thread, running the same program compiled with "
                   "--weights fp16 (mixing and MLP weights rounded to float16, outputs within ~1e-3 of the fp32 program's); "
                   "torch and ONNX Runtime run the fp32 program, their fastest form; the other lines are the fp32 program's)")
    if res.get("gains"):
        out.append("")
        out.append("threads: the engine with N threads against itself with one, same rounds (GAIN: N threads faster "
                   "at the median; numba threading layer " + str(res.get("threading_layer")) + "):")
        for name, v in res["gains"].items():
            v = np.asarray(v)
            med = float(np.median(v))
            out.append(f"{'GAIN      ' if med > 1 else 'NO GAIN   '}  {name:46s} {med:.2f}x [{v.min():.2f}-{v.max():.2f}]  (n={len(v)})")
    out.append("")
    tails = res.get("tails_s", {})
    out.append("contender medians over rounds (µs per step) [min-max]" + ("; p99 and max step, medians over the rounds"
                                                                          if tails else "") + ":")
    for k, v in S.items():
        if k.startswith(("engine", "torch", "onnx")):
            tl = ""
            if k in tails:
                t = np.asarray(tails[k]) * 1e6
                tl = f"   p99 {np.median(t[:, 0]):.1f}, max {np.median(t[:, 1]):.0f}"
            out.append(f"  {k:36s} {np.median(v) * 1e6:9.1f}  [{v.min() * 1e6:.1f}-{v.max() * 1e6:.1f}]{tl}")
    limits = [("sgemm_gflops", "sgemm GFLOP/s (1 thread)"), ("bw_edge_gbs", "read GB/s at edge's working set"),
              ("bw_paper_gbs", "read GB/s at paper's working set")]
    for th in res.get("threads", [1]):
        if th > 1:
            limits += [("sgemm_gflops" + _suffix(th), f"sgemm GFLOP/s ({th} threads)"),
                       ("bw_edge_gbs" + _suffix(th), f"read GB/s at edge's set, {th} thr"),
                       ("bw_paper_gbs" + _suffix(th), f"read GB/s at paper's set, {th} thr")]
    for k, lab in limits + [("loadavg_1m", "load average (1 min) per round")]:
        v = S.get(k)
        if v is not None and len(v):
            out.append(f"  {lab:34s} {np.median(v):7.1f}  [{v.min():.1f}-{v.max():.1f}]")
    if "blas" in res:
        out.append(f"  SciPy's BLAS (the engine's fallback for products its register tile does not take): {res['blas']}")
    b = res["bytes"]
    paper = f", paper B=1 K=32 {b['paper B=1 K=32'] / 1e6:.1f} MB" if b["paper B=1 K=32"] else ""   # (--no-paper: not measured)
    if b.get("paper B=1 K=32 fp16"):
        paper += f" ({b['paper B=1 K=32 fp16'] / 1e6:.1f} MB with fp16 weights: that program's floor)"
    out.append(f"  working sets: edge B=1 K=32 {b['edge B=1 K=32'] / 1e6:.2f} MB{paper}")
    if "start" in res:
        for k in ("cold", "warm"):
            s = res["start"][k]
            cpu = ", ".join(f"{x['cpu_s']:.1f}" for x in s)
            wall = ", ".join(f"{x['wall_s']:.1f}" for x in s)
            up = ", ".join(f"{x['startup_cpu_s']:.2f}" for x in s if "startup_cpu_s" in x)
            comp = ", ".join(f"{x['compile_cpu_s']:.2f}" for x in s if "compile_cpu_s" in x)
            out.append(f"  demo --fast {k}: start-up (to the 1st chunk) CPU {up} s; kernel compile or load (background "
                       f"thread) CPU {comp or 'n/a'} s; whole run (40 s of audio and the plot) CPU {cpu} s, wall {wall} s")
    return out


# -------------------------------------------------------------------------------------------------
# time vs K, L and B (engine and tuned torch), medians with spread over interleaved rounds
# -------------------------------------------------------------------------------------------------
def sweep(reps: int = 5, log=print) -> dict:
    import torch

    from essm_stream.engine import StreamEngine
    from peers import TunedTorchStep
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    edge = make_program("edge")
    out = {"K": {}, "L": {}, "B": {}}
    pts = []   # (axis, value, contender, fn, frames, n)
    for K in (1, 2, 4, 8, 16, 32):
        eng = StreamEngine(edge, batch=1)
        ts = TunedTorchStep(edge, 1, K)
        fr = list(rng.standard_normal((8, 1, 40)).astype(np.float32))
        pts.append(("K", K, "engine", (lambda e, k: (lambda x: e.step(x, k)))(eng, K), fr, 200))
        pts.append(("K", K, "torch", ts.step, [torch.from_numpy(f) for f in fr], 60))
    for L in (64, 128, 256, 512, 1024, 2048, 4096):
        prog = make_program("edge", seq_len=L)
        eng = StreamEngine(prog, batch=1)
        fr = list(rng.standard_normal((8, 1, 40)).astype(np.float32))
        pts.append(("L", L, "engine", (lambda e: (lambda x: e.step(x, 32)))(eng), fr, max(20, 200 * 128 // L)))
    for B in (1, 2, 4, 8, 16, 32, 64):
        eng = StreamEngine(edge, batch=B)
        fr = list(rng.standard_normal((8, B, 40)).astype(np.float32))
        pts.append(("B", B, "engine", (lambda e: (lambda x: e.step(x, 32)))(eng), fr, max(10, 200 // B)))
    samples = {(a, v, c): [] for a, v, c, *_ in pts}
    out["loadavg_1m"] = []
    for r in range(reps):
        out["loadavg_1m"].append(os.getloadavg()[0])
        for a, v, cn, fn, fr, n in pts:
            samples[(a, v, cn)].append(_median_step(fn, fr, n))
        log(f"sweep round {r + 1}/{reps}")
    for (a, v, cn), s in samples.items():
        out[a].setdefault(cn, {})[v] = s
    return out


def load_note(loads) -> str:
    """'load average 0.4-1.1 on 2 cores': what else ran on the machine while measuring."""
    return f"load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores" if loads else ""


def plot_sweep(sw: dict, folder: str, note: str = "") -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(folder, exist_ok=True)
    paths = []
    labels = {"K": ("budget K (edge, B=1)", "µs per step"), "L": ("window L (edge, B=1, K=32)", "µs per step"),
              "B": ("streams B (edge, K=32)", "µs per stream per step")}
    for axis, data in ((k, v) for k, v in sw.items() if k in labels):
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        for cn, d in data.items():
            xs = sorted(d)
            a = np.array([d[x] for x in xs]) * 1e6
            if axis == "B":
                a = a / np.array(xs)[:, None]
            med = np.median(a, axis=1)
            ax.errorbar(xs, med, yerr=[med - a.min(1), a.max(1) - med], fmt="o-" if cn == "engine" else "s--",
                        capsize=3, label={"engine": "numba engine", "torch": "tuned torch eager"}[cn])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(labels[axis][0])
        ax.set_ylabel(labels[axis][1])
        ax.set_title("median, bars min-max over rounds" + (f"\n({note})" if note else ""), fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = os.path.join(folder, f"perf_{axis.lower()}.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
