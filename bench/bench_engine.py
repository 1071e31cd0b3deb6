"""Latency of the numba streaming engine vs its peers, measured side by side in one run.

Run through the CLI: `essm-stream bench --help`. For each config (edge, paper), stream count B and
budget K: per-step latency of the engine (median, p99, p99/p50), of a well-written torch eager
step, of the naive recompute-the-window torch step, of the plain numpy reference and of ONNX
Runtime on an exported step graph; the machine's single-thread sgemm GFLOP/s and memory
bandwidth; and the engine's fraction of the roofline. Random weights: speed does not depend on
training.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CONFIGS = {
    "edge": dict(d_in=40, d_out=12, d_model=64, n_layers=4, seq_len=128, k_max=32, d_gate=32),
    "paper": dict(d_in=40, d_out=12, d_model=256, n_layers=8, seq_len=1024, k_max=32, d_gate=32),
    "tiny": dict(d_in=8, d_out=4, d_model=16, n_layers=2, seq_len=32, k_max=32, d_gate=8),
}


# ---------------------------------------------------------------------------------------------
# machine limits
# ---------------------------------------------------------------------------------------------
SGEMM_CODE = """
import time, numpy as np
n = 1024
a = np.random.rand(n, n).astype(np.float32); b = np.random.rand(n, n).astype(np.float32); a @ b
r = []
for _ in range(7):
    t = time.perf_counter(); a @ b; r.append(2 * n**3 / (time.perf_counter() - t))
print(sorted(r)[3] / 1e9)   # the median: on a shared VM the best of a few can be a clock outlier
"""


def sgemm_gflops(threads: int = 1) -> float:
    """Float32 GEMM of numpy's BLAS (1024^3) on `threads` BLAS threads (default one), in a subprocess
    with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (they may be set here and slow OpenBLAS down),
    except when NUMBA_CPU_NAME compiles the engine for another CPU (the AVX2 emulation,
    docs/PERFORMANCE.md): then the engine's "% of sgemm" is against that CPU's BLAS kernels, as the
    emulation's OpenBLAS variables choose them (on this machine Haswell's sgemm runs at about half the
    AVX-512 one's rate)."""
    emulating = os.environ.get("NUMBA_CPU_NAME", "host") not in ("", "host")
    drop = () if emulating else ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    n = str(int(threads))
    env.update(OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    r = subprocess.run([sys.executable, "-c", SGEMM_CODE], env=env, capture_output=True, text=True, timeout=300)
    return float(r.stdout.split()[-1])


def read_bandwidth_gbs(nbytes: int = 512 << 20) -> float:
    """Single-thread streaming read bandwidth (numba sum over a float32 array much larger than L3)."""
    from essm_stream.numba_config import njit

    @njit(cache=False)
    def total(a):
        s = np.float32(0)
        for i in range(a.shape[0]):   # fastmath: vectorized with several partial sums
            s += a[i]
        return s

    a = np.ones(nbytes // 4, dtype=np.float32)
    total(a[:64])
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        total(a)
        best = max(best, a.nbytes / (time.perf_counter() - t))
    return best / 1e9


def step_cost(cfg, B: int, K: int, itemsize: int = 4, mix_itemsize: int | None = None,
              mlp_itemsize: int | None = None) -> tuple[float, float]:
    """(FLOPs, minimum bytes moved) of one step of B streams at budget K. mix_itemsize / mlp_itemsize:
    bytes per mixing weight (Mcat's active prefix) / MLP weight (fc1.W, fc2.W) when not itemsize (2: a
    program with --weights fp16)."""
    d, L, nl, dg, dh = cfg.d_model, cfg.seq_len, cfg.n_layers, cfg.d_gate, cfg.mlp_ratio * cfg.d_model
    per_layer = 2 * K * L * d + 2 * (K + 1) * d * d + (2 * dg * d + 2 * K * dg if cfg.gated else 0) + \
        (4 * d * dh if cfg.mlp else 0)
    flops = B * (2 * cfg.d_in * d + nl * per_layer + 2 * d * cfg.d_out)
    w = cfg.d_in * d + nl * ((K + 1) * d * d + K * L + (dg * d + K * dg if cfg.gated else 0) +
                             (2 * d * dh if cfg.mlp else 0)) + d * cfg.d_out
    bytes_ = itemsize * (w + B * nl * d * L)      # weights once per step + every stream's windows
    if mix_itemsize is not None:
        bytes_ += (mix_itemsize - itemsize) * nl * (K + 1) * d * d
    if mlp_itemsize is not None and cfg.mlp:
        bytes_ += (mlp_itemsize - itemsize) * nl * 2 * d * dh
    return float(flops), float(bytes_)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
def time_steps(fn, frames, n: int, warm: int = 5) -> np.ndarray:
    for i in range(warm):
        fn(frames[i % len(frames)])
    out = np.empty(n)
    pc = time.perf_counter_ns
    for i in range(n):
        x = frames[i % len(frames)]
        t0 = pc()
        fn(x)
        out[i] = pc() - t0
    return out / 1e9


def stats(ts: np.ndarray) -> dict:
    p50, p99 = float(np.median(ts)), float(np.percentile(ts, 99))
    return {"p50": p50, "p99": p99, "ratio": p99 / p50, "n": int(len(ts))}


def allocations_per_step(eng, x, K, n: int = 500) -> dict:
    import tracemalloc
    for _ in range(10):
        eng.step(x, K)
    tracemalloc.start()
    base_cur, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    s0 = tracemalloc.take_snapshot()
    for _ in range(n):
        eng.step(x, K)
    s1 = tracemalloc.take_snapshot()
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    diff = [st for st in s1.compare_to(s0, "lineno") if "tracemalloc" not in str(st.traceback)]
    blocks = sum(max(st.count_diff, 0) for st in diff)
    return {"retained_bytes_per_step": max(cur - base_cur, 0) / n, "retained_blocks": int(blocks),
            "peak_transient_bytes": int(peak - base_cur)}


def points_for(name, B, quick, steps_arg):
    """Timed steps per point (engine) by cost."""
    if steps_arg:
        return steps_arg
    base = {("edge", 1): 3000, ("edge", 32): 400, ("paper", 1): 300, ("paper", 32): 25,
            ("tiny", 1): 3000, ("tiny", 32): 1000}.get((name, B), 200)
    return max(10, base // 10) if quick else base


def run_config(name, B, ks, peers, quick, steps_arg, dtype, log):
    import torch
    from essm_stream.compile import compile_model
    from essm_stream.config import ESSMConfig
    from essm_stream.engine import StreamEngine
    from essm_stream.model import ESSMModel

    torch.set_num_threads(1)
    cfg = ESSMConfig(**CONFIGS[name])
    torch.manual_seed(0)
    model = ESSMModel(cfg, init_filters=False)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((cfg.seq_len, cfg.k_max)))
    with torch.no_grad():
        for blk in model.blocks:
            blk.essm.phi.copy_(torch.from_numpy(q))
            blk.essm.sigma.copy_(torch.from_numpy(np.logspace(0, -12, cfg.k_max)))
    prog = compile_model(model)
    frames = rng.standard_normal((64, B, cfg.d_in)).astype(dtype)
    n = points_for(name, B, quick, steps_arg)
    rows = []
    eng = StreamEngine(prog, batch=B, dtype=dtype)
    eng.warmup()
    # fill the history past L so windows are full (speed does not depend on it, but be honest)
    eng.run(rng.standard_normal((cfg.seq_len + 1, B, cfg.d_in)).astype(dtype), cfg.k_max)
    for K in ks:
        r = {"config": name, "B": B, "K": K}
        r["engine"] = stats(time_steps(lambda x: eng.step(x, K), frames, n))
        Tb = 64
        Xb = rng.standard_normal((Tb, B, cfg.d_in)).astype(dtype)
        eng.run(Xb, K)
        t0 = time.perf_counter()
        reps = max(1, n // Tb)
        for _ in range(reps):
            eng.run(Xb, K)
        r["engine_run_per_step"] = (time.perf_counter() - t0) / (reps * Tb)
        r["flops"], r["bytes"] = step_cost(cfg, B, K, np.dtype(dtype).itemsize)
        npeer = max(5, n // 5)
        if "torch" in peers:
            from peers import TorchStep
            ts = TorchStep(prog, B, K)
            fr = [torch.from_numpy(f.astype(np.float32)) for f in frames]
            r["torch"] = stats(time_steps(ts.step, fr, npeer))
        if "onnx" in peers:
            try:
                from peers import OnnxStep
                on = OnnxStep(prog, B, K)
                r["onnx"] = stats(time_steps(on.step, [f.astype(np.float32) for f in frames], npeer))
            except Exception as e:  # say so, do not hide it
                r["onnx_error"] = f"{type(e).__name__}: {e}"[:200]
        if "numpy" in peers:
            ref = StreamEngine(prog, batch=B, dtype=np.float64, kernel="ref")
            nn_ = 3 if (name == "paper" and B > 1) else (5 if quick else 20)
            r["numpy"] = stats(time_steps(lambda x: ref.step(x, K), [f.astype(np.float64) for f in frames], nn_, warm=1))
        if "naive" in peers and not (name == "paper" and B > 1):
            from peers import NaiveTorchStep
            nv = NaiveTorchStep(model, B, K)
            nv.n = cfg.seq_len                              # a full window: the steady state
            fr = [torch.from_numpy(f.astype(np.float32)) for f in frames]
            r["naive"] = stats(time_steps(nv.step, fr, 3 if quick else 10, warm=1))
        if K == ks[-1]:
            x0 = frames[0]
            r["alloc"] = allocations_per_step(eng, x0, K, n=200 if quick else 1000)
        log(fmt_row(r))
        rows.append(r)
    return rows


def fmt_us(s):
    return f"{s * 1e6:9.1f}" if s < 1 else f"{s:8.2f}s"


def fmt_row(r):
    e = r["engine"]
    parts = [f"{r['config']:5s} B={r['B']:<3d} K={r['K']:<3d} engine p50 {fmt_us(e['p50'])} us  p99/p50 {e['ratio']:.2f}"]
    for p in ("torch", "onnx", "numpy", "naive"):
        if p in r:
            parts.append(f"{p} {r[p]['p50'] / e['p50']:7.1f}x")
    return "  ".join(parts)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def report(res) -> str:
    m = res["machine"]
    out = []
    out.append(f"Measured {res['date']} on `{m['cpu']}` ({m['cores']} cores, shared with other agents while "
               f"measuring), Python {m['python']}, numpy {m['numpy']}, numba {m['numba']}, torch {m['torch']}, "
               f"onnxruntime {m.get('onnxruntime')}. Engine dtype {res['dtype']}.\n")
    out.append(f"Machine limits (same run, one thread): sgemm **{m['sgemm_gflops']:.1f} GFLOP/s** "
               f"(numpy/OpenBLAS 1024³, OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset for that measurement), "
               f"read bandwidth **{m['read_gbs']:.1f} GB/s** (numba sum over 512 MiB).\n")
    if res.get("start"):
        s = res["start"]
        out.append(f"Start-up (fresh process to first output, tiny program, float32): cold (empty numba cache) "
                   f"{s['cold']['process_s']:.1f} s (import {s['cold']['import_s']:.2f} s + compile and first step "
                   f"{s['cold']['first_step_s']:.1f} s); warm (cache filled) {s['warm']['process_s']:.1f} s "
                   f"(import {s['warm']['import_s']:.2f} s + load and first step {s['warm']['first_step_s']:.2f} s).\n")
    for (cname, B) in sorted({(r["config"], r["B"]) for r in res["rows"]}, key=lambda t: (list(CONFIGS).index(t[0]), t[1])):
        rows = [r for r in res["rows"] if r["config"] == cname and r["B"] == B]
        c = CONFIGS[cname]
        out.append(f"\n### {cname} (d={c['d_model']}, {c['n_layers']} layers, L={c['seq_len']}, K̄={c['k_max']}), B={B}\n")
        out.append("| K | engine p50 µs | p99 µs | p99/p50 | run()/T µs | GFLOP/s | % sgemm | t_comp µs | t_mem µs | "
                   "torch eager × | ONNX RT × | numpy ref × | naive torch × |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            e = r["engine"]
            gf = r["flops"] / e["p50"] / 1e9
            tc = r["flops"] / (m["sgemm_gflops"] * 1e9)
            tm = r["bytes"] / (m["read_gbs"] * 1e9)

            def ratio(p):
                if p in r:
                    return f"{r[p]['p50'] / e['p50']:.1f} ({r[p]['p50'] * 1e6:.0f} µs)"
                return "n/a" if p != "onnx" or "onnx_error" not in r else "failed"
            out.append(f"| {r['K']} | {e['p50'] * 1e6:.1f} | {e['p99'] * 1e6:.1f} | {e['ratio']:.2f} | "
                       f"{r['engine_run_per_step'] * 1e6:.1f} | {gf:.1f} | {100 * gf / m['sgemm_gflops']:.0f}% | "
                       f"{tc * 1e6:.1f} | {tm * 1e6:.1f} | {ratio('torch')} | {ratio('onnx')} | {ratio('numpy')} | {ratio('naive')} |")
        al = [r["alloc"] for r in rows if "alloc" in r]
        if al:
            a = al[0]
            out.append(f"\nHeap (tracemalloc, engine.step at K={rows[-1]['K']}): {a['retained_bytes_per_step']:.1f} "
                       f"bytes retained per step, {a['retained_blocks']} blocks retained over the loop, "
                       f"peak transient {a['peak_transient_bytes']} bytes.")
        errs = {r.get("onnx_error") for r in rows if r.get("onnx_error")}
        if errs:
            out.append(f"\nONNX Runtime peer failed: {errs}")
    return "\n".join(out) + "\n"


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = sorted({(r["config"], r["B"]) for r in res["rows"]}, key=lambda t: (list(CONFIGS).index(t[0]), t[1]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), squeeze=False)
    for ax, (cname, B) in zip(axes[0], groups):
        rows = [r for r in res["rows"] if r["config"] == cname and r["B"] == B]
        Ks = [r["K"] for r in rows]
        for key, label, st in (("engine", "numba engine", "o-"), ("torch", "torch eager step", "s--"),
                               ("onnx", "ONNX Runtime", "^--"), ("numpy", "numpy reference", "v:"),
                               ("naive", "naive torch (recompute)", "x:")):
            pts = [(r["K"], r[key]["p50"] * 1e6) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), st, label=label)
        tm = [r["bytes"] / (res["machine"]["read_gbs"] * 1e9) * 1e6 for r in rows]
        tc = [r["flops"] / (res["machine"]["sgemm_gflops"] * 1e9) * 1e6 for r in rows]
        ax.plot(Ks, np.maximum(tm, tc), "k-", lw=0.8, alpha=0.6, label="roofline max(t_comp, t_mem)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(Ks)
        ax.set_xticklabels([str(k) for k in Ks])
        ax.set_xlabel("budget K")
        ax.set_ylabel("median latency per step (µs)")
        ax.set_title(f"{cname}, B={B}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


BEGIN, END = "<!-- BEGIN RESULTS (written by essm-stream bench) -->", "<!-- END RESULTS -->"


def write_doc(path, text):
    block = f"{BEGIN}\n{text}\n{END}"
    old = open(path).read() if os.path.exists(path) else ""
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = (old or "# Performance\n\n") + "\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.replace(tmp, path)


def main_targets(a) -> int:
    """--targets and/or --plots: issue 13's pass / fall-short lines and the K, L, B sweeps."""
    import targets as tg
    log = lambda s: print(s, flush=True)  # noqa: E731
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": "essm-stream bench " + " ".join(sys.argv[2:]),
           "loadavg_start": os.getloadavg()}
    if getattr(a, "targets", False):
        ths = tuple(int(x) for x in str(getattr(a, "threads", "1") or "1").split(","))
        if 1 not in ths:
            ths = (1,) + ths   # the one-thread targets are always measured (the N-thread lines are beside them)
        res["targets"] = tg.measure(a.reps, log, with_paper=not a.no_paper, with_start=not a.no_start, threads=ths)
        text = "\n".join(tg.lines(res["targets"]))
        print(text, flush=True)
        if a.doc:
            import numba
            import torch
            try:
                import onnxruntime
                ortv = onnxruntime.__version__
            except ImportError:
                ortv = None
            head = (f"`{res['command']}`, {res['date']}, {a.reps} interleaved rounds; Python {platform.python_version()}, "
                    f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__}, onnxruntime {ortv}; "
                    f"{os.cpu_count()} cores; load average (1 min) {res['loadavg_start'][0]:.2f} at the start, "
                    f"{tg.load_note(res['targets']['samples_s']['loadavg_1m'])} over the rounds (a shared machine: "
                    "other jobs may have run beside the measurement; ratios formed inside a round are the robust "
                    "part).")
            write_doc(a.doc, head + "\n\n```\n" + text + "\n```")
            log(f"wrote {a.doc}")
    if getattr(a, "plots", None):
        res["sweep"] = tg.sweep(max(3, min(a.reps, 5)), log)
        for p in tg.plot_sweep(res["sweep"], a.plots, tg.load_note(res["sweep"]["loadavg_1m"])):
            log(f"wrote {p}")
    if a.json:
        from essm_stream.fileio import atomic_write_bytes
        atomic_write_bytes(a.json, json.dumps(res, indent=1).encode())
        log(f"wrote {a.json}")
    return 0


def main(a) -> int:
    from essm_stream.errors import ConfigError
    if getattr(a, "targets", False) or getattr(a, "plots", None):
        return main_targets(a)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            raise ConfigError(f"unknown config {c!r}; known: {sorted(CONFIGS)}")
    try:
        batches = [int(b) for b in a.batches.split(",")]
        ks = [int(k) for k in a.ks.split(",")]
    except ValueError:
        raise ConfigError("--batches and --ks take comma-separated integers") from None
    peers = set() if a.peers == "none" else {p.strip() for p in a.peers.split(",")}
    unknown = peers - {"torch", "naive", "numpy", "onnx"}
    if unknown:
        raise ConfigError(f"unknown peers {sorted(unknown)}")
    dtype = getattr(np, a.dtype)
    import numba
    import torch
    log = lambda s: print(s, flush=True)  # noqa: E731
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "numba": numba.__version__, "torch": torch.__version__}
    try:
        with open("/proc/cpuinfo") as f:
            machine["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import onnxruntime
        machine["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        peers.discard("onnx")
        log("onnxruntime is not installed: ONNX peer skipped (pip install onnx onnxruntime)")
        machine["onnxruntime"] = None
    machine["sgemm_gflops"] = sgemm_gflops()
    machine["read_gbs"] = read_bandwidth_gbs(128 << 20 if a.quick else 512 << 20)
    log(f"machine: sgemm {machine['sgemm_gflops']:.1f} GFLOP/s (1 thread), read {machine['read_gbs']:.1f} GB/s")
    start = None
    if not a.quick:
        from essm_stream.commands.warmup import start_times
        start = start_times(None, a.dtype)
        log(f"start: cold {start['cold']['process_s']:.1f} s, warm {start['warm']['process_s']:.1f} s")
    rows = []
    for c in configs:
        for B in batches:
            rows += run_config(c, B, ks, peers, a.quick, a.steps, dtype, log)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "dtype": a.dtype, "machine": machine, "start": start, "rows": rows,
           "command": "essm-stream bench " + " ".join(sys.argv[2:])}
    text = report(res)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    if a.plot:
        plot(res, a.plot)
        log(f"wrote {a.plot}")
    if a.doc:
        write_doc(a.doc, text)
        log(f"wrote {a.doc}")
    return 0


if __name__ == "__main__":
    import argparse
    sys.path.insert(0, os.path.dirname(HERE))
    from essm_stream.commands import bench as _cmd
    _p = argparse.ArgumentParser(description=_cmd.DESCRIPTION)
    _cmd.add_arguments(_p)
    sys.exit(main(_p.parse_args()))
