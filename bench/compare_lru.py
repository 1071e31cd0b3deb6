"""ES-SSM's budget curve against the CompreSSM peer, measured in one run on the same task and budget.

Trains, with the project's training loop, the same data, seed, steps, batch, lr and block shape:
  (a) ES-SSM (budget dropout) once, then swept over K;
  (b) LRU at full state N;
  (c) LRU reduced in training by CompreSSM's balanced truncation to each rank r (--ranks, at --at);
  (d) LRU trained at state r from the start (the paper's control).
Per model: test accuracy, MACs per streaming step (the same counting for both kinds), and torch
per-step time (one stream, one thread, inference_mode: ES-SSM as bench/peers.TorchStep with ring
buffers, LRU as LRUModel.step) and the numba StreamEngine's per-step time on the compiled program
(both kinds, float32, one stream). Writes JSON, a plot
(accuracy vs MACs, all curves on one axis) and a markdown table. `--retime` re-measures the saved
models' step times in one process, interleaved (what the docs quote).

    nice -n 10 python bench/compare_lru.py --task digits --steps 400 --out runs/compare_lru
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SWEEP = (1, 2, 4, 8, 16, 32)


def step_time(fn, n: int, warm: int = 200) -> float:
    """Median seconds per call over n calls (after warm-up), in blocks of 10 to smooth timer overhead."""
    for _ in range(warm):
        fn()
    times = []
    for _ in range(n // 10):
        t = time.perf_counter()
        for _ in range(10):
            fn()
        times.append((time.perf_counter() - t) / 10)
    return float(np.median(times))


def time_essm(model, X, ks, n):
    import torch

    from essm_stream import StreamEngine, compile_model
    from peers import TorchStep
    prog = compile_model(model)
    eng = StreamEngine(prog, batch=1)
    frames = X[0].astype(np.float32)                      # (T, d_in)
    T = len(frames)
    out = {"torch_s": {}, "engine_s": {}}
    for K in ks:
        ts = TorchStep(prog, 1, K)
        xt = [torch.from_numpy(frames[t][None]) for t in range(T)]
        i = [0]

        def f_torch():
            ts.step(xt[i[0] % T])
            i[0] += 1
        out["torch_s"][K] = step_time(f_torch, n)
        eng.reset()

        def f_eng():
            eng.step(frames[i[0] % T], K)
            i[0] += 1
        out["engine_s"][K] = step_time(f_eng, n)
    return out


def time_lru(model, X, n):
    import torch
    model = model.float().eval()
    frames = torch.from_numpy(X[0].astype(np.float32))
    T = len(frames)
    st = [model.init_state(1)]
    i = [0]

    def f():
        with torch.inference_mode():
            _, st[0] = model.step(frames[i[0] % T][None], st[0])
        i[0] += 1
    return step_time(f, n)


def time_lru_engine(model, X, n):
    """Per-step seconds of the StreamEngine running the compiled LRU program (float32, one stream)."""
    from essm_stream import StreamEngine, compile_model
    eng = StreamEngine(compile_model(model), batch=1)
    frames = X[0].astype(np.float32)
    T = len(frames)
    i = [0]

    def f():
        eng.step(frames[i[0] % T], 1)
        i[0] += 1
    return step_time(f, n)


def retime(out: Path, n: int, rounds: int = 3) -> dict:
    """Measure every saved model's per-step time again in one process, rounds interleaved across
    models (median of the rounds): ES-SSM engine + torch at each K, LRU numba + torch."""
    from essm_stream.checkpoint import load_checkpoint
    from essm_stream.tasks import make_task
    res = json.loads((out / "compare.json").read_text())
    a = res["args"]
    kw = dict(max_len=a["max_len"], n_train=a["n_train"]) if a["task"] == "listops" else {}
    X = make_task(a["task"], seed=a["seed"], **kw).X_test
    models = {name: load_checkpoint(out / name / "model.safetensors")[0] for name in res["models"]}
    acc = {name: {} for name in models}
    for _ in range(rounds):
        for name, m in models.items():
            r = res["models"][name]
            if r["kind"] == "essm":
                tm = time_essm(m, X, r["K"], n)
                for key, col in (("torch_s", "torch_step_s"), ("engine_s", "engine_step_s")):
                    acc[name].setdefault(col, []).append([tm[key][k] for k in r["K"]])
            else:
                acc[name].setdefault("torch_step_s", []).append(time_lru(m, X, n))
                acc[name].setdefault("engine_step_s", []).append(time_lru_engine(m, X, n))
    for name, cols in acc.items():
        for col, vals in cols.items():
            res["models"][name][col] = np.median(np.array(vals), axis=0).tolist()
    res["timing"] = {"rounds": rounds, "calls_per_round": n, "mode": "retime: one process, interleaved"}
    (out / "compare.json").write_text(json.dumps(res, indent=2))
    return res


def claim_table(dirs: list[str]) -> str:
    """The paper's claim across runs (seeds): CompreSSM-reduced vs small-from-start at each rank."""
    rows: dict[int, dict[str, list]] = {}
    for d in dirs:
        res = json.loads((Path(d) / "compare.json").read_text())
        for name, r in res["models"].items():
            for tag, key in (("lru_compressm_r", "compressm"), ("lru_small_N", "small"), ("lru_modal_r", "modal")):
                if name.startswith(tag):
                    rows.setdefault(int(name[len(tag):]), {"compressm": [], "small": [], "modal": []})[key].append(
                        (res["args"]["seed"], 100 * r["acc"]))
    lines = ["| rank N per layer | CompreSSM (64 → N in training) % | small from start % | "
             "CompreSSM − small (mean) | modal truncation (control) % |", "|---|---|---|---|---|"]

    def fmt(v):
        return (" / ".join(f"{a:.1f}" for _, a in sorted(v)) + f" (mean {np.mean([a for _, a in v]):.1f})") if v else "–"
    for n in sorted(rows):
        c, sm, mo = rows[n]["compressm"], rows[n]["small"], rows[n]["modal"]
        diff = np.mean([a for _, a in c]) - np.mean([a for _, a in sm]) if c and sm else float("nan")
        lines.append(f"| {n} | {fmt(c)} | {fmt(sm)} | {diff:+.1f} | {fmt(mo)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="digits", choices=["digits", "digits_perm", "listops"])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--k-max", type=int, default=32)
    p.add_argument("--state", type=int, default=64, help="LRU full state N")
    p.add_argument("--ranks", default="4,8,16", help="ranks for (c) and (d)")
    p.add_argument("--energy", type=float, default=None, help="also an energy-rule CompreSSM run (e.g. 0.9)")
    p.add_argument("--at", default="0.1,0.2", help="reduction points as fractions of the steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-steps", type=int, default=2000, help="calls per per-step timing")
    p.add_argument("--max-len", type=int, default=64, help="listops: longest expression")
    p.add_argument("--n-train", type=int, default=4000, help="listops: training expressions")
    p.add_argument("--essm-variants", default="essm", help="ES-SSM variants to sweep, e.g. essm,dropout_only")
    p.add_argument("--only", default="essm,full,compressm,small", help="which groups to run")
    p.add_argument("--out", default="runs/compare_lru")
    p.add_argument("--claim", help="no training: comma-separated run dirs (seeds) -> CompreSSM vs small table")
    p.add_argument("--retime", action="store_true",
                   help="no training: re-measure per-step times of the models saved under --out")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if a.claim:
        print(claim_table(a.claim.split(",")))
        return 0
    if a.retime:
        import torch
        torch.set_num_threads(1)
        res = retime(Path(a.out), a.time_steps)
        md = table(res)
        (Path(a.out) / "COMPARE.md").write_text(md)
        plot(res, Path(a.out) / f"compare_{res['args']['task']}.png")
        print(md)
        return 0

    import torch
    torch.set_num_threads(1)
    from essm_stream.compressm import CompressRule
    from essm_stream.kws.control import macs_per_step
    from essm_stream.lru_config import macs_per_step_lru
    from essm_stream.tasks import make_task
    from essm_stream.train import TrainConfig, evaluate, train

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(max_len=a.max_len, n_train=a.n_train) if a.task == "listops" else {}
    ds = make_task(a.task, seed=a.seed, **kw)
    ranks = [int(r) for r in a.ranks.split(",") if r]
    base = dict(task=a.task, task_kwargs=kw, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                seed=a.seed, eval_every=a.steps, ckpt_every=a.steps, device="cpu")
    shared = dict(d_model=a.d_model, n_layers=a.layers)
    only = set(a.only.split(","))
    runs = []
    if "essm" in only:
        for v in a.essm_variants.split(","):
            runs.append(("essm" if v == "essm" else f"essm_{v}", "essm",
                         dict(shared, k_max=min(a.k_max, ds.seq_len), variant=v), {}))
    if "full" in only:
        runs.append((f"lru_full_N{a.state}", "lru", dict(shared, state=a.state), {}))
    if "compressm" in only:
        for r in ranks:
            runs.append((f"lru_compressm_r{r}", "lru", dict(shared, state=a.state),
                         CompressRule.parse(f"rank={r}", a.at).to_dict()))
        if a.energy is not None:
            runs.append((f"lru_compressm_e{a.energy}", "lru", dict(shared, state=a.state),
                         CompressRule.parse(f"energy={a.energy}", a.at).to_dict()))
    if "modal" in only:   # control (not in CompreSSM): truncate modes without balancing, same points
        for r in ranks:
            rule = CompressRule.parse(f"rank={r}", a.at).to_dict()
            runs.append((f"lru_modal_r{r}", "lru", dict(shared, state=a.state), dict(rule, method="modal")))
    if "small" in only:
        for r in ranks:
            runs.append((f"lru_small_N{r}", "lru", dict(shared, state=r), {}))

    results = {"args": vars(a), "machine": {"cpus": os.cpu_count(), "torch_threads": 1,
               "note": "shared 2-core box under load from other jobs; times are indicative"},
               "models": {}}
    for name, kind, model_kw, compress in runs:
        t0 = time.perf_counter()
        tc = TrainConfig(model=model_kw, model_kind=kind, compress=compress, out_dir=str(out / name), **base)
        s = train(tc, ds=ds, progress=False)
        model, secs = s["model"], time.perf_counter() - t0
        rec = {"kind": kind, "train_seconds": secs, "config": model.cfg.to_dict()}
        if kind == "essm":
            ks = [k for k in SWEEP if k <= model.cfg.k_max]
            rec["K"] = ks
            rec["acc"] = [evaluate(model, ds.X_test, ds.y_test, k) for k in ks]
            rec["macs"] = [macs_per_step(model.cfg, k) for k in ks]
            tm = time_essm(model, ds.X_test, ks, a.time_steps)
            rec["torch_step_s"] = [tm["torch_s"][k] for k in ks]
            rec["engine_step_s"] = [tm["engine_s"][k] for k in ks]
        else:
            rec["acc"] = evaluate(model, ds.X_test, ds.y_test, None)
            rec["ranks"] = list(model.cfg.layer_states())
            rec["macs"] = macs_per_step_lru(model.cfg)
            rec["torch_step_s"] = time_lru(model, ds.X_test, a.time_steps)
            rec["engine_step_s"] = time_lru_engine(model, ds.X_test, a.time_steps)
            rec["compress"] = s.get("compress", [])
            rec["rank_history"] = [(c["step"], c["ranks"]) for c in rec["compress"]]
        results["models"][name] = rec
        logging.info("%s: acc %s, %.0f s", name, rec["acc"], secs)
        (out / "compare.json").write_text(json.dumps(results, indent=2))   # partial results survive a kill

    md = table(results)
    (out / "COMPARE.md").write_text(md)
    plot(results, out / f"compare_{a.task}.png")
    print(md)
    return 0


def table(res) -> str:
    lines = ["| model | state / K | acc % | MACs / step | torch µs / step | engine µs / step |",
             "|---|---|---|---|---|---|"]
    for name, r in res["models"].items():
        if r["kind"] == "essm":
            for k, acc, m, t, e in zip(r["K"], r["acc"], r["macs"], r["torch_step_s"], r["engine_step_s"]):
                lines.append(f"| {name} | K={k} | {100 * acc:.1f} | {m:,} | {t * 1e6:.0f} | {e * 1e6:.1f} |")
        else:
            nb = r.get("engine_step_s")
            lines.append(f"| {name} | N={r['ranks']} | {100 * r['acc']:.1f} | {r['macs']:,} | "
                         f"{r['torch_step_s'] * 1e6:.0f} | {'–' if nb is None else f'{nb * 1e6:.1f}'} |")
    return "\n".join(lines) + "\n"


def _curves(ax, res, xkey, scale):
    """All models on one axis: x = res[model][xkey] * scale, y = accuracy (%)."""
    groups = {"LRU full": [], "LRU CompreSSM (in-training)": [], "LRU small from start": []}
    for name, r in res["models"].items():
        if r.get(xkey) is None:
            continue
        if r["kind"] == "essm":
            xs = [v * scale for v in r[xkey]]
            ax.plot(xs, [100 * a for a in r["acc"]], "o-", label=f"{name} swept over K")
            for k, x, acc in zip(r["K"], xs, r["acc"]):
                ax.annotate(f"K={k}", (x, 100 * acc), textcoords="offset points", xytext=(3, -10), fontsize=7)
        else:
            g = ("LRU full" if "full" in name else "LRU CompreSSM (in-training)" if "compressm" in name
                 else "LRU small from start")
            groups[g].append((r[xkey] * scale, 100 * r["acc"], sum(r["ranks"])))
    style = {"LRU full": "k*", "LRU CompreSSM (in-training)": "s-", "LRU small from start": "^--"}
    for g, pts in groups.items():
        if pts:
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style[g], label=g, markersize=8)
            for x, acc, n in pts:
                ax.annotate(f"ΣN={n}", (x, acc), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)


def plot(res, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = any(r.get("engine_step_s") is not None for r in res["models"].values())
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(13 if timed else 7, 4.8), squeeze=False)
    _curves(axes[0, 0], res, "macs", 1.0)
    axes[0, 0].set_xlabel("MACs per streaming step (log)")
    if timed:
        _curves(axes[0, 1], res, "engine_step_s", 1e6)
        axes[0, 1].set_xlabel("StreamEngine µs per step, float32, 1 stream (log; loaded 2-core box)")
    a = res["args"]
    fig.suptitle(f"{a['task']}: {a['steps']} steps each, lr {a['lr']}, d={a['d_model']}, "
                 f"{a['layers']} blocks, seed {a['seed']}")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
