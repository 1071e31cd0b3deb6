"""LDS (ladder) vs exact (ring-buffer FIR) spectral mode, measured side by side in one run.

    python bench/bench_lds.py [--ls 128,1024,4096] [--quick] [--json F] [--plot F]
    python bench/bench_lds.py --accuracy CHECKPOINT [--tol 1e-3] [--ks 1,2,4,8,16,32]

Edge config (d=64, 4 layers, K̄=32, B=1, float32) with the real Hankel filters (the ladder is fitted
to them at tol 1e-3; random weights elsewhere: speed does not depend on training). For each L:

* filter stage alone: the exact mode's ring write + (K × L)·(L × d) window convolution per layer,
  vs the ladder's ring swap + chain update + (K × N)·(N × d) readout per layer, both in numba
  loops over many steps (no Python per step), at K = 32 and K = 4;
* whole step: StreamEngine.step for an exact and an LDS program of the same weights.

Exact and LDS points alternate in rounds (interleaved), so drifting machine load hits both
alike; each round gives a median, and the table reports the median over rounds with the spread
(min-max of the round medians). The development machine was shared and loaded while these
numbers were taken: compare the ratios, not the absolute microseconds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from essm_stream import kernels_lds as kl  # noqa: E402
from essm_stream import lds  # noqa: E402
from essm_stream.numba_config import njit  # noqa: E402

EDGE = dict(d_in=40, d_out=12, d_model=64, n_layers=4, k_max=32, d_gate=32)


# ---------------------------------------------------------------------------------------------
# filter stage alone
# ---------------------------------------------------------------------------------------------
def exact_stage_kernel():
    """The exact mode's filter stage per layer as the engine runs it (kernels.gemm_nt)."""
    from essm_stream import kernels

    @njit(cache=False)
    def run(U, phir, hist, out, K, nl, L, d):
        two_L = 2 * L
        p = 0
        for t in range(U.shape[0]):
            for l in range(nl):
                hb = l * d * two_L
                for j in range(d):
                    v = U[t, j]
                    hist[hb + j * two_L + p] = v
                    hist[hb + j * two_L + p + L] = v
                kernels.gemm_nt(phir, l * 32 * L, L, hist, hb + p + 1, two_L, L, out, 0, d, K, d, False)
            p = (p + 1) % L
    return run


@njit(cache=False)   # numba's cache would not see edits of the kernels it inlines
def lds_stage(U, Wt, wl, N, hist, V, S, uo, out, K, nl, L, d):
    """The ladder's filter stage per layer: ring swap (u(t-L) out, u(t) in; the ring is (L, d) so
    both are one contiguous row), chain, readout."""
    p = 0
    for t in range(U.shape[0]):
        for l in range(nl):
            row = hist[(l * L + p) * d:(l * L + p + 1) * d]
            for j in range(d):
                uo[j] = row[j]
                row[j] = U[t, j]
            kl.ladder_update(V, l * N * d, U[t], 0, uo, 0, Wt, l * wl, l * wl + N, S, 0, N, d)
            kl.ladder_readout(V, l * N * d, Wt, l * wl + 2 * N, N, out, 0, K, N, d)
        p = (p + 1) % L


def filter_stage(L, fit, K, steps, rounds, d=64, nl=4, dtype=np.float32, log=print):
    rng = np.random.default_rng(0)
    U = rng.standard_normal((steps, d)).astype(dtype)
    phir = np.ascontiguousarray(np.broadcast_to(rng.standard_normal(32 * L), (nl, 32 * L)).ravel()).astype(dtype)
    hist_e = np.zeros(nl * d * 2 * L, dtype)
    out = np.zeros(32 * d, dtype)
    Wt1 = kl.ladder_weights(fit.poles, fit.bL, fit.readout_v, dtype)
    wl = len(Wt1)
    Wt = np.tile(Wt1, nl)
    hist_l = np.zeros(nl * d * L, dtype)
    V, S, uo = np.zeros(nl * fit.N * d, dtype), np.zeros(d, dtype), np.zeros(d, dtype)
    exact = exact_stage_kernel()
    exact(U[:2], phir, hist_e, out, K, nl, L, d)
    lds_stage(U[:2], Wt, wl, fit.N, hist_l, V, S, uo, out, K, nl, L, d)
    te, tl = [], []
    for _ in range(rounds):
        t0 = time.thread_time()
        exact(U, phir, hist_e, out, K, nl, L, d)
        te.append((time.thread_time() - t0) / steps)
        t0 = time.thread_time()
        lds_stage(U, Wt, wl, fit.N, hist_l, V, S, uo, out, K, nl, L, d)
        tl.append((time.thread_time() - t0) / steps)
    return np.array(te), np.array(tl)


# ---------------------------------------------------------------------------------------------
# whole step
# ---------------------------------------------------------------------------------------------
def programs(L, tol, log=print):
    """An exact and an LDS program of the same random weights with the real Hankel filters."""
    from essm_stream.config import ESSMConfig
    from essm_stream.engine import tiny_program
    from essm_stream.hankel import spectral_filters
    from essm_stream.program import StreamProgram

    cfg = ESSMConfig(seq_len=L, **EDGE)
    base = tiny_program(cfg)
    arrays = {k: np.array(v) for k, v in base.arrays.items()}
    sigma, phi = spectral_filters(L, cfg.k_max)
    arrays["phir"] = np.ascontiguousarray(np.broadcast_to(phi[::-1].T, (cfg.n_layers, cfg.k_max, L)))
    arrays["sigma"] = np.ascontiguousarray(np.broadcast_to(sigma, (cfg.n_layers, cfg.k_max)))
    exact = StreamProgram(cfg, arrays)
    t0 = time.thread_time()
    ladder = lds.lds_program(exact, tol=tol)
    log(f"  L={L}: fitted the ladder in {time.thread_time() - t0:.1f} s: N per layer {ladder.spectral['n']}")
    return exact, ladder


def whole_step(exact_prog, lds_prog, K, steps, rounds, dtype=np.float32):
    from essm_stream.engine import StreamEngine
    engs = [StreamEngine(p, batch=1, dtype=dtype) for p in (exact_prog, lds_prog)]
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, exact_prog.cfg.d_in)).astype(dtype)
    for e in engs:
        e.warmup()
        for i in range(50):
            e.step(X[i % 64], K)
    res = [[], []]
    pc = time.thread_time_ns
    for _ in range(rounds):
        for i, e in enumerate(engs):
            ts = np.empty(steps)
            for s in range(steps):
                x = X[s % 64]
                t0 = pc()
                e.step(x, K)
                ts[s] = pc() - t0
            res[i].append(np.median(ts) / 1e9)
    return np.array(res[0]), np.array(res[1])


# ---------------------------------------------------------------------------------------------
# task accuracy of a trained model, exact vs LDS (--accuracy CHECKPOINT)
# ---------------------------------------------------------------------------------------------
def stream_logits(prog, X, K, dtype=np.float32):
    from essm_stream.engine import StreamEngine
    eng = StreamEngine(prog, batch=X.shape[0], dtype=dtype)
    return eng.run(np.ascontiguousarray(X.transpose(1, 0, 2)).astype(dtype), K)      # (T, B, d_out)


def compare(exact, ladder, X, y, ks):
    rows = []
    for K in ks:
        ye, yl = stream_logits(exact, X, K), stream_logits(ladder, X, K)
        pe, pl = ye[-1].argmax(-1), yl[-1].argmax(-1)
        rel = float(np.abs(yl - ye).max() / np.abs(ye).max())
        rows.append({"K": K, "acc_exact": float(np.mean(pe == y)), "acc_lds": float(np.mean(pl == y)),
                     "flipped": int(np.sum(pe != pl)), "n": int(len(y)), "logit_rel_diff": rel})
    return rows


def accuracy_main(checkpoint, tol, ks_text, json_path=None, buffered=True) -> int:
    """Compile CHECKPOINT exact and LDS, stream the task's test split (and all of it) through both
    float32 engines, every sequence a parallel stream, decision at the last step; print per K."""
    from essm_stream.checkpoint import load_checkpoint
    from essm_stream.commands.sweep import dataset_for
    from essm_stream.compile import compile_model

    model, meta = load_checkpoint(checkpoint)
    ds = dataset_for(meta)
    ks = [min(int(k), model.cfg.k_max) for k in ks_text.split(",")]
    exact = compile_model(model)
    ladder = compile_model(model, spectral="lds", tol=tol, lds_buffered=buffered)
    print(f"{ds.name}: L={model.cfg.seq_len}, {'buffered' if buffered else 'NO-BUFFER'} ladder, "
          f"N per layer {ladder.spectral['n']}, "
          f"fit error {max(ladder.spectral['error']):.1e} (tol {tol:g})")
    out = {"checkpoint": checkpoint, "tol": tol, "buffered": buffered, "n": ladder.spectral["n"], "splits": {}}
    splits = {"test": (ds.X_test, ds.y_test),
              "all": (np.concatenate([ds.X_train, ds.X_test]), np.concatenate([ds.y_train, ds.y_test]))}
    for name, (X, y) in splits.items():
        rows = compare(exact, ladder, X, y, ks)
        out["splits"][name] = rows
        print(f"\n{name} ({len(y)} sequences), float32 engines")
        print("| K | exact | LDS | change | flipped decisions | max logit diff (rel.) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['K']} | {100 * r['acc_exact']:.2f}% | {100 * r['acc_lds']:.2f}% | "
                  f"{100 * (r['acc_lds'] - r['acc_exact']):+.2f} pp | {r['flipped']} / {r['n']} | "
                  f"{r['logit_rel_diff']:.1e} |")
    if json_path:
        from essm_stream.fileio import atomic_write_bytes
        atomic_write_bytes(json_path, json.dumps(out, indent=1).encode())
    return 0


# ---------------------------------------------------------------------------------------------
# accuracy over long streams: the float32 ladder kernel vs the exact float64 FIR (--drift)
# ---------------------------------------------------------------------------------------------
def drift(Ls, tol, d=4, periods=100, buffered=True):
    """Stream white noise for periods·L steps through the float32 ladder kernels (window correction
    included) and through the exact float64 FIR (scipy lfilter) of the same σ^{1/4}-scaled filters;
    max error relative to the largest output, overall and per tenth of the stream."""
    from scipy.signal import lfilter

    from essm_stream.hankel import spectral_filters
    rows = []
    for L in Ls:
        sigma, phi = spectral_filters(L, 32)
        h = lds.scaled_filters(phi, sigma)
        fit = lds.fit_ladder(h, tol, buffered=buffered)
        T = periods * L
        U = np.random.default_rng(0).standard_normal((T, d))
        ref = np.stack([lfilter(h[:, k], [1.0], U, axis=0) for k in range(32)], axis=1)      # (T, K, d)
        Uold = np.zeros_like(U)
        if buffered:
            Uold[L:] = U[:-L]
        row = {"L": L, "N": fit.N, "fit_error": fit.weighted_err, "steps": T}
        outs = {}
        for dt in (np.float64, np.float32):
            Wt = kl.ladder_weights(fit.poles, fit.bL, fit.readout_v, dt)
            out = np.zeros((T, 32 * d), dt)
            kl.ladder_run(U.astype(dt), Uold.astype(dt), Wt, fit.N, 32, np.zeros(fit.N * d, dt), np.zeros(d, dt), out)
            outs[dt] = out
            err = np.abs(out.reshape(T, 32, d) - ref).max(axis=(1, 2)) / np.abs(ref).max()
            row[np.dtype(dt).name] = {"max": float(err.max()), "tenths": err.reshape(10, -1).max(axis=1).tolist()}
        r32 = np.abs(outs[np.float32] - outs[np.float64]).max(axis=1) / np.abs(ref).max()
        row["float32_vs_float64"] = {"max": float(r32.max()), "tenths": r32.reshape(10, -1).max(axis=1).tolist()}
        rows.append(row)
        t32 = row["float32"]["tenths"]
        print(f"L={L}: N={fit.N}, fit error {fit.weighted_err:.2e}; over {T} steps max error float64 "
              f"{row['float64']['max']:.2e}, float32 {row['float32']['max']:.2e} "
              f"(first/last tenth {t32[0]:.2e}/{t32[-1]:.2e}); float32 rounding alone (vs the float64 "
              f"ladder) {r32.max():.1e}, first/last tenth {r32[:T // 10].max():.1e}/{r32[-T // 10:].max():.1e}",
              flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
def summary(a):
    return {"median": float(np.median(a)), "min": float(np.min(a)), "max": float(np.max(a))}


def fmt(s):
    return f"{s['median'] * 1e6:8.1f} ({s['min'] * 1e6:.1f}-{s['max'] * 1e6:.1f})"


def report(res) -> str:
    lines = ["filter stage (4 layers, d=64, B=1, float32), µs per step: median over rounds (min-max)", "",
             f"| L | N | K | exact | LDS | exact/LDS |", "|---|---|---|---|---|---|"]
    for r in res["filter"]:
        lines.append(f"| {r['L']} | {r['N']} | {r['K']} | {fmt(r['exact'])} | {fmt(r['lds'])} | "
                     f"{r['exact']['median'] / r['lds']['median']:.1f}x |")
    if res.get("step"):
        lines += ["", "whole step (edge: d=64, 4 layers, K̄=32, B=1, float32, StreamEngine.step), µs", "",
                  "| L | N | K | exact | LDS | exact/LDS |", "|---|---|---|---|---|---|"]
        for r in res["step"]:
            lines.append(f"| {r['L']} | {r['N']} | {r['K']} | {fmt(r['exact'])} | {fmt(r['lds'])} | "
                         f"{r['exact']['median'] / r['lds']['median']:.1f}x |")
        lds_by_L = {}
        for r in res["step"]:
            lds_by_L.setdefault(r["K"], {})[r["L"]] = r["lds"]["median"]
        for K, byL in lds_by_L.items():
            Ls = sorted(byL)
            lines.append(f"\nLDS whole step at K={K}: " + ", ".join(
                f"L={Ls[-1]} / L={L0} = {byL[Ls[-1]] / byL[L0]:.2f}x" for L0 in Ls[:-1]))
    lines.append(f"\nmachine: {res['machine']}")
    return "\n".join(lines)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from essm_stream.fileio import save_figure

    fig, axes = plt.subplots(1, 2 if res.get("step") else 1, figsize=(11 if res.get("step") else 6, 4),
                             squeeze=False)
    for ax, key, title in zip(axes[0], ("filter", "step"), ("filter stage", "whole step")):
        for K in sorted({r["K"] for r in res.get(key, [])}):
            rows = [r for r in res[key] if r["K"] == K]
            Ls = [r["L"] for r in rows]
            for mode, style in (("exact", "o-"), ("lds", "s--")):
                med = [r[mode]["median"] * 1e6 for r in rows]
                lo = [r[mode]["min"] * 1e6 for r in rows]
                hi = [r[mode]["max"] * 1e6 for r in rows]
                ax.errorbar(Ls, med, yerr=[np.subtract(med, lo), np.subtract(hi, med)], fmt=style,
                            capsize=3, label=f"{mode} K={K}")
        ax.set(xscale="log", yscale="log", xlabel="window L", ylabel="µs per step",
               title=f"{title} (d=64, 4 layers, B=1, float32; loaded machine)")
        ax.set_xticks(sorted({r["L"] for r in res[key]}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.get_yaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ls", default="128,1024,4096")
    p.add_argument("--ks", default="32,4")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-step", action="store_true", help="filter stage only (no engine)")
    p.add_argument("--json")
    p.add_argument("--plot")
    p.add_argument("--no-buffer", action="store_true", help="--accuracy / --drift with the no-buffer variant (MCU)")
    p.add_argument("--drift", action="store_true",
                   help="instead of timing: float32 ladder vs exact float64 FIR over 100·L steps per L")
    p.add_argument("--accuracy", metavar="CHECKPOINT",
                   help="instead of timing: task accuracy of this trained checkpoint, exact vs LDS at --tol")
    args = p.parse_args(argv)
    if args.accuracy:
        return accuracy_main(args.accuracy, args.tol, args.ks if args.ks != "32,4" else "1,2,4,8,16,32", args.json,
                             buffered=not args.no_buffer)
    import platform
    Ls = [int(v) for v in args.ls.split(",")]
    if args.drift:
        rows = drift(Ls, args.tol, buffered=not args.no_buffer)
        if args.json:
            from essm_stream.fileio import atomic_write_bytes
            atomic_write_bytes(args.json, json.dumps(rows, indent=1).encode())
        return 0
    Ks = [int(v) for v in args.ks.split(",")]
    rounds = 5 if args.quick else 11
    res = {"filter": [], "step": [], "tol": args.tol,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                      f"load average {os.getloadavg()[0]:.1f} at start (shared, loaded)"}
    from essm_stream.hankel import spectral_filters
    progs = {}
    for L in Ls:
        sigma, phi = spectral_filters(L, 32)
        fit = lds.fit_ladder(lds.scaled_filters(phi, sigma), args.tol)
        print(f"L={L}: N={fit.N} ({fit.source}), fit error {fit.weighted_err:.2e}", flush=True)
        for K in Ks:
            steps = max(50, (400 if args.quick else 2000) * 128 // L)
            te, tl = filter_stage(L, fit, K, steps, rounds)
            res["filter"].append({"L": L, "N": fit.N, "K": K, "exact": summary(te), "lds": summary(tl)})
            print(f"  filter K={K}: exact {np.median(te) * 1e6:.1f} µs, LDS {np.median(tl) * 1e6:.1f} µs", flush=True)
        if not args.no_step:
            progs[L] = programs(L, args.tol)
    for L, (pe, pl) in progs.items():
        for K in Ks:
            steps = 100 if args.quick else 400
            te, tl = whole_step(pe, pl, K, steps, rounds)
            res["step"].append({"L": L, "N": max(pl.spectral["n"]), "K": K, "exact": summary(te), "lds": summary(tl)})
            print(f"  step L={L} K={K}: exact {np.median(te) * 1e6:.1f} µs, LDS {np.median(tl) * 1e6:.1f} µs", flush=True)
    res["machine"] += f", {os.getloadavg()[0]:.1f} at end"
    text = report(res)
    print(text)
    if args.json:
        from essm_stream.fileio import atomic_write_bytes
        atomic_write_bytes(args.json, json.dumps(res, indent=1).encode())
    if args.plot:
        plot(res, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
