"""Budget sweeps: accuracy per runtime budget K from one trained model, retention vs K̄, the sweet
spot and the collapse boundary (paper §5.1), as a table and a plot.

Definitions used here (the paper's, made robust to a noisy curve):
- retention(K) = acc(K) / acc(K̄);
- sweet spot: the smallest swept K whose retention, and that of every larger swept K, is >= 98%;
- collapse boundary: the smallest swept K whose retention, and that of every larger swept K, is
  >= 90%; below it accuracy drops sharply.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

SWEEP_KS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)


def smallest_k_retaining(ks, retention, threshold: float) -> int | None:
    """Smallest K such that it and every larger K keep retention >= threshold."""
    best = None
    for k, r in sorted(zip(ks, retention), reverse=True):
        if r + 1e-12 < threshold:
            break
        best = k
    return best


def summarize(ks, acc) -> dict:
    ks = [int(k) for k in ks]
    acc = [float(a) for a in acc]
    full = acc[int(np.argmax(ks))]
    retention = [a / full if full > 0 else float("nan") for a in acc]
    return {"K": ks, "acc": acc, "retention": retention, "full_acc": full,
            "sweet_spot": smallest_k_retaining(ks, retention, 0.98),
            "collapse_boundary": smallest_k_retaining(ks, retention, 0.90)}


def budget_sweep(model, X, y, ks=SWEEP_KS, device="cpu", progress=True) -> dict:
    """Evaluate one model at every budget in ks (clipped to its K̄)."""
    from tqdm.auto import tqdm

    from .train import evaluate

    k_max = model.cfg.k_max
    ks = [k for k in ks if k <= k_max]
    acc = [evaluate(model, X, y, k, device=device)
           for k in tqdm(ks, desc="sweep K", disable=not progress, leave=False)]
    return summarize(ks, acc)


def format_table(results: dict[str, dict], metric: str = "acc") -> str:
    """Markdown table: one row per named sweep, one column per K, then sweet spot and collapse."""
    ks = sorted({k for r in results.values() for k in r["K"]})
    head = "| model | " + " | ".join(f"K={k}" for k in ks) + " | sweet spot | collapse |"
    lines = [head, "|" + "---|" * (len(ks) + 3)]
    for name, r in results.items():
        vals = dict(zip(r["K"], r[metric]))
        cells = [f"{100 * vals[k]:.1f}" if k in vals else "" for k in ks]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['sweet_spot']} | {r['collapse_boundary']} |")
    return "\n".join(lines)


def plot_sweeps(results: dict[str, dict], path, title: str = "ES-SSM budget sweep") -> None:
    """Accuracy vs K for each named sweep; ★ sweet spot, ▲ collapse boundary (as the paper's Fig. 2)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, r in results.items():
        acc = 100 * np.asarray(r["acc"])
        (line,) = ax.plot(r["K"], acc, "o-", label=name, ms=4)
        for key, marker, size in (("sweet_spot", "*", 14), ("collapse_boundary", "^", 9)):
            k = r.get(key)
            if k is not None:
                ax.plot([k], [acc[r["K"].index(k)]], marker, color=line.get_color(), ms=size, mec="k")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({k for r in results.values() for k in r["K"]}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("runtime spectral budget K")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title + "   (★ sweet spot ≥98%, ▲ collapse boundary ≥90%)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
