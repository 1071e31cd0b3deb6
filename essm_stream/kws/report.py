"""Evaluation of a compiled keyword program (torch-free): clip accuracy per K through the streaming
engine, threshold choice on a training-voice stream, stream metrics per fixed K and under the
energy-aware controller on the unseen-voice stream, plots and a markdown report.

    essm-stream kws-eval --data runs/kws/data --program runs/kws/model/kws.essm --out runs/kws/eval
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..sweep import SWEEP_KS, summarize
from ..fileio import atomic_write_text
from .build import load_stream
from .evaluate import run_spotter, score_stream
from .spotter import KeywordSpotter

STREAM_KS = (1, 2, 4, 8, 16, 32)
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def clip_sweep(program, X: np.ndarray, y: np.ndarray, ks=SWEEP_KS, batch: int = 600) -> dict:
    """12-class clip accuracy per K, reading the engine's pooled output at each clip's last step
    (X (N, T, d_in) already stacked as the model takes it)."""
    from ..engine import StreamEngine

    acc = []
    for K in ks:
        correct = 0
        for i in range(0, len(X), batch):
            Xb = np.ascontiguousarray(X[i:i + batch].transpose(1, 0, 2), dtype=np.float32)   # (T, B, d)
            eng = StreamEngine(program, batch=Xb.shape[1], dtype=np.float32)
            Y = eng.run(Xb, K)
            correct += int((Y[-1].argmax(-1) == y[i:i + batch]).sum())
        acc.append(correct / len(X))
    return summarize(ks, acc)


def choose_threshold(program, val_pcm, val_events, thresholds=THRESHOLDS, fa_weight: float = 2.0) -> tuple[float, list]:
    """The threshold maximising hits - fa_weight x false accepts at K = K̄ on the validation stream."""
    rows = []
    for th in thresholds:
        sp = KeywordSpotter(program, threshold=th)
        s, _ = score_stream(run_spotter(sp, val_pcm), val_events, len(val_pcm) / 16000)
        rows.append({"threshold": th, **s.to_dict()})
    best = max(rows, key=lambda r: (r["hits"] - fa_weight * r["false_accepts"], -r["threshold"]))
    return best["threshold"], rows


def stream_metrics(program, pcm, events, ks=STREAM_KS, threshold=None, controller_fractions=(0.3, 0.5)) -> list[dict]:
    from .control import E_MAC_J, macs_per_step
    e_of = lambda k: E_MAC_J * macs_per_step(program.cfg, int(k))  # noqa: E731
    rows = []
    dur = len(pcm) / 16000
    for K in ks:
        sp = KeywordSpotter(program, K=K, threshold=threshold)
        t0 = time.perf_counter()
        dets = run_spotter(sp, pcm)
        s, _ = score_stream(dets, events, dur)
        rows.append({"mode": f"K={K}", "K": K, "mean_K": float(K), "wall_s": time.perf_counter() - t0,
                     "cpu_us": 1e6 * sp.cpu_total_s / max(1, sp.hops), **s.to_dict()})
    try:
        from .control import kws_energy_controller
    except ImportError:
        return rows
    for f in controller_fractions:
        ctl = kws_energy_controller(program, fraction=f)
        sp = KeywordSpotter(program, controller=ctl, threshold=threshold, record=True)
        t0 = time.perf_counter()
        dets = run_spotter(sp, pcm)
        s, _ = score_stream(dets, events, dur)
        Ks = sp.trace.arrays()["K"]
        rows.append({"mode": f"energy-aware ({f:.0%} of K=32 power)", "K": None, "mean_K": float(Ks.mean()),
                     "energy_vs_k32": float(sum(e_of(k) for k in Ks) / (len(Ks) * e_of(program.k_max))),
                     "wall_s": time.perf_counter() - t0, "cpu_us": 1e6 * sp.cpu_total_s / max(1, sp.hops),
                     **s.to_dict()})
    for r in rows:
        if r["K"] is not None:
            r["energy_vs_k32"] = e_of(r["K"]) / e_of(program.k_max)
    return rows


def threshold_curve(program, pcm, events, ks=(4, 32), thresholds=THRESHOLDS) -> list[dict]:
    """Hits and false accepts on a stream per (K, threshold): the trade-off curve, for comparing
    models independently of the threshold the validation stream picked (reporting only)."""
    rows = []
    for K in ks:
        for th in thresholds:
            s, _ = score_stream(run_spotter(KeywordSpotter(program, K=K, threshold=th), pcm), events, len(pcm) / 16000)
            rows.append({"K": K, "threshold": th, **s.to_dict()})
    return rows


def curve_table(rows) -> str:
    ths = sorted({r["threshold"] for r in rows})
    lines = ["| K | " + " | ".join(f"th={t}" for t in ths) + " |", "|---|" + "---|" * len(ths)]
    for K in sorted({r["K"] for r in rows}):
        cells = {r["threshold"]: r for r in rows if r["K"] == K}
        lines.append(f"| {K} | " + " | ".join(f"{cells[t]['hits']}/{cells[t]['keywords']} hits, "
                                              f"{cells[t]['fa_per_hour']:.0f} FA/h" for t in ths) + " |")
    return "\n".join(lines)


def stream_table(rows) -> str:
    lines = ["| budget | mean K | energy vs K=32 (MAC model) | engine CPU µs/step | hit rate | false accepts / h "
             "| latency median (s) | latency p90 (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        med = "" if r["latency_median_s"] is None else f"{r['latency_median_s']:.2f}"
        p90 = "" if r["latency_p90_s"] is None else f"{r['latency_p90_s']:.2f}"
        lines.append(f"| {r['mode']} | {r['mean_K']:.1f} | {100 * r['energy_vs_k32']:.0f}% | {r['cpu_us']:.0f} | "
                     f"{100 * r['hit_rate']:.1f}% ({r['hits']}/{r['keywords']}) | {r['fa_per_hour']:.1f} "
                     f"({r['false_accepts']}) | {med} | {p90} |")
    return "\n".join(lines)


def plot_report(sweep: dict, baseline_acc, rows, path) -> None:

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    K = sweep["K"]
    ax[0].plot(K, 100 * np.asarray(sweep["acc"]), "o-", label="ES-SSM clip accuracy")
    ax[0].plot(K, 100 * np.asarray(sweep["retention"]), "s--", ms=4, label="retention vs K=32")
    if baseline_acc is not None:
        ax[0].axhline(100 * baseline_acc, color="tab:red", ls=":", label=f"TC-ResNet8 {100 * baseline_acc:.1f}%")
    ax[0].axhline(99, color="0.5", lw=0.6)
    ax[0].set_xscale("log", base=2)
    ax[0].set_xticks(K)
    ax[0].get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax[0].set_xlabel("runtime budget K")
    ax[0].set_ylabel("%")
    ax[0].set_title("12-class clip accuracy, unseen voices", fontsize=9)
    ax[0].legend(fontsize=8)
    fixed = [r for r in rows if r["K"] is not None]
    ax[1].plot([r["K"] for r in fixed], [100 * r["hit_rate"] for r in fixed], "o-", label="hit rate (%)")
    ax2 = ax[1].twinx()
    ax2.plot([r["K"] for r in fixed], [r["fa_per_hour"] for r in fixed], "s--", color="tab:red", label="FA / h")
    for r in rows:
        if r["K"] is None:
            ax[1].plot([r["mean_K"]], [100 * r["hit_rate"]], "*", ms=14, color="tab:green",
                       label=f"energy-aware (mean K {r['mean_K']:.1f})")
            ax2.plot([r["mean_K"]], [r["fa_per_hour"]], "*", ms=10, color="tab:olive")
    ax[1].set_xscale("log", base=2)
    ax[1].set_xticks([r["K"] for r in fixed])
    ax[1].get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax[1].set_xlabel("K (fixed) / mean K (controller)")
    ax[1].set_ylabel("hit rate (%)")
    ax2.set_ylabel("false accepts per hour")
    ax[1].set_title("6-minute stream, unseen voices", fontsize=9)
    ax[1].legend(fontsize=8, loc="center right")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def evaluate_all(data_dir, program_path, out_dir, baseline_acc=None, set_threshold: bool = True) -> dict:
    from ..program import StreamProgram
    from .train import stack_frames
    from .build import load_features

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prog = StreamProgram.load(program_path)
    ds, _ = load_features(data_dir)
    ds = stack_frames(ds, int(prog.frontend.get("stack", 1)))
    sweep = clip_sweep(prog, ds.X_test, ds.y_test)
    val_pcm, val_ev, _ = load_stream(Path(data_dir) / "stream_val.npz")
    th, th_rows = choose_threshold(prog, val_pcm, val_ev)
    if set_threshold:
        fe = dict(prog.frontend)
        fe["detector"] = dict(fe.get("detector", {}), threshold=th)
        prog.set_frontend(fe)
        prog.save(program_path)
    pcm, ev, meta = load_stream(Path(data_dir) / "stream_test.npz")
    rows = stream_metrics(prog, pcm, ev, threshold=th)
    curve = threshold_curve(prog, pcm, ev)
    res = {"sweep": sweep, "threshold": th, "threshold_rows": th_rows, "stream": rows, "curve": curve,
           "stream_seconds": len(pcm) / 16000, "baseline_acc": baseline_acc}
    atomic_write_text(out / "eval.json", json.dumps(res, indent=1))
    plot_report(sweep, baseline_acc, rows, out / "kws_eval.png")
    atomic_write_text(out / "report.md", markdown_report(res, prog))
    return res


def markdown_report(res: dict, prog) -> str:
    from ..sweep import format_table

    sw = res["sweep"]
    lines = ["### Clip accuracy per K (engine, unseen voices)", "",
             format_table({"ES-SSM accuracy %": sw}), "", format_table({"ES-SSM retention %": sw}, metric="retention"),
             "", f"Full accuracy (K = 32): {100 * sw['full_acc']:.2f}%."]
    if res.get("baseline_acc") is not None:
        lines.append(f"TC-ResNet8 baseline, same clips: {100 * res['baseline_acc']:.2f}%.")
    lines += ["", f"### Streams ({res['stream_seconds'] / 60:.0f} min, unseen voices; threshold {res['threshold']} "
              "chosen on the training-voice stream)", "", stream_table(res["stream"]), ""]
    if res.get("curve"):
        lines += [("Trade-off on the same stream per threshold (reporting only; the threshold above is chosen "
                   "on the training-voice stream):"), "", curve_table(res["curve"]), ""]
    return "\n".join(lines)
