"""Train the keyword ES-SSM (and the CNN baseline), sweep K, compile, profile, bundle. Needs torch.

    essm-stream kws-train --data runs/kws/data --out runs/kws/model [--install]

ES-SSM: K̄ = 32 with budget dropout (uniform K_train per minibatch). Two 10 ms log-mel frames are
stacked per model step (20 ms steps, d_in = 80: half the steps, a quarter of the training cost of
the FFT convolutions on a 2-core CPU), L = 64 steps (1.28 s), causal mean-pooled head over the
trailing W = 50 steps (1 s); labels are read at the clip's last step, as
the stream reads them at every hop. The compiled program carries the frontend (librosa filterbank,
normalisation, labels, detector defaults) and the budget profile (clip accuracy per K on unseen
voices, engine latency per hop, dynamic energy per hop from a power model).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import data as D
from ..fileio import atomic_write_text
from .build import load_features

log = logging.getLogger(__name__)

PROFILE_KS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
DETECTOR = {"threshold": 0.7, "smoothing_s": 0.1, "refractory_s": 1.0}
DYN_W = 3.0       # controllers.PowerModel default: +3 W when the core is busy


@dataclass
class KWSTrainConfig:
    d_model: int = 48
    n_layers: int = 2
    d_gate: int = 32
    stack: int = 2                 # frames stacked per model step: 20 ms steps, L = 64 steps = 1.28 s
    pool_window: int = 50          # W steps of the causal mean head: 1 s
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    eval_every: int = 500
    resume: bool = False           # continue from out/essm/last.safetensors (same config)


def train_essm(data_dir, out_dir, kc: KWSTrainConfig = KWSTrainConfig(), progress: bool = True):
    import torch

    from ..train import TrainConfig, train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    ds, frontend = load_features(data_dir)
    ds = stack_frames(ds, kc.stack)
    frontend = dict(frontend, stack=kc.stack)
    tc = TrainConfig(task="kws12", steps=kc.steps, batch_size=kc.batch_size, lr=kc.lr, seed=kc.seed,
                     warmup_steps=100, eval_every=kc.eval_every, ckpt_every=200, out_dir=str(out_dir), resume=kc.resume,
                     eval_k=(1, 4, 32), model=dict(d_model=kc.d_model, n_layers=kc.n_layers, d_gate=kc.d_gate,
                                                  head="mean", pool_window=kc.pool_window, k_max=32))
    summary = train(tc, ds=ds, progress=progress)
    return summary["model"], ds, frontend, summary


def stack_frames(ds, stack: int):
    """(N, T, n_mels) -> (N, T/stack, stack*n_mels): frames 2i, 2i+1 side by side (oldest first)."""
    from ..tasks import SequenceDataset

    if stack == 1:
        return ds
    f = lambda X: X[:, X.shape[1] % stack:].reshape(len(X), X.shape[1] // stack, stack * X.shape[2])  # noqa: E731
    return SequenceDataset(f(ds.X_train), ds.y_train, f(ds.X_test), ds.y_test, ds.n_classes, ds.name)


def measure_latency(program, ks=PROFILE_KS, hops: int = 300, rounds: int = 3) -> list[float]:
    """Median CPU seconds per engine step at each K (float32, batch 1), best of `rounds`."""
    from ..engine import StreamEngine

    eng = StreamEngine(program, batch=1, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((hops, program.d_in)).astype(np.float32)
    eng.run(x[:10], 32)
    out = []
    for K in ks:
        best = np.inf
        for _ in range(rounds):
            ts = np.empty(hops)
            for i in range(hops):
                t0 = time.perf_counter()
                eng.step(x[i], K)
                ts[i] = time.perf_counter() - t0
            best = min(best, float(np.median(ts)))
        out.append(best)
    return out


def build_program(model, frontend: dict, sweep: dict, note: str = ""):
    """Compile with the frontend slot filled and a budget profile (accuracy, latency, energy per K)."""
    from ..compile import compile_model

    fe = dict(frontend)
    fe["labels"] = list(D.LABELS)
    fe["detector"] = dict(DETECTOR)
    prog = compile_model(model, frontend=fe)
    lat = measure_latency(prog, sweep["K"])
    prog.set_budget_profile({
        "K": list(sweep["K"]), "accuracy": list(sweep["acc"]), "latency_s": lat,
        "energy_j": [DYN_W * t for t in lat],
        "accuracy_of": "12-class clip accuracy, unseen espeak-ng voices (kws-data test split)",
        "latency_of": "median wall seconds per engine step (one 10 ms hop), float32, batch 1",
        "energy_of": f"dynamic energy per hop = {DYN_W} W x latency (controllers.PowerModel default dyn_w)",
        "note": note})
    return prog


def train_all(data_dir, out_dir, kc: KWSTrainConfig = KWSTrainConfig(), install: bool = False,
              baseline: bool = True, baseline_epochs: int = 12, progress: bool = True) -> dict:
    from ..sweep import budget_sweep, plot_sweeps

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, ds, frontend, summary = train_essm(data_dir, out / "essm", kc, progress)
    train_s = time.perf_counter() - t0
    sweep = budget_sweep(model, ds.X_test, ds.y_test, PROFILE_KS, progress=progress)
    prog = build_program(model, frontend, sweep, note=f"trained {kc.steps} steps in {train_s:.0f} s on CPU")
    prog.save(out / "kws.essm")
    res = {"essm": {"sweep": sweep, "train_s": train_s, "config": asdict(kc),
                    "params": int(sum(p.numel() for p in model.parameters())),
                    "program_bytes": (out / "kws.essm").stat().st_size}}
    if baseline:
        from .baseline import train_baseline
        res["baseline"] = train_baseline(ds, epochs=baseline_epochs, seed=kc.seed, progress=progress)
    atomic_write_text(out / "results.json", json.dumps(res, indent=1))
    plot_sweeps({"ES-SSM (K̄=32, budget dropout)": sweep}, out / "sweep.png", title="KWS-12, unseen voices")
    if install:
        dst = Path(__file__).resolve().parent.parent / "assets" / "kws_default.essm"
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(out / "kws.essm", dst)
        res["installed"] = str(dst)
    return res


# ----------------------------------------------------------------------------- long-clip training
@dataclass
class LongTrainConfig:
    """Fine-tune (or train) on stream-format clips (`longclips.py`), mixed with the 64-step clips."""
    init: str = "runs/kws/model/essm/model.safetensors"   # start from this checkpoint ("" = from scratch)
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.05
    p_short: float = 0.25          # share of minibatches drawn from the 64-step clips (zero-history start)
    min_steps: int = 128           # long clips are cropped to their last min_steps..all steps
    d_model: int = 32              # from scratch only (init = "")
    max_minutes: float = 1e9       # stop early (checkpoint kept) after this wall time
    seed: int = 1
    log_every: int = 25
    eval_every: int = 300
    ckpt_every: int = 50


def train_long(data_dir, out_dir, lc: LongTrainConfig | None = None, stack: int = 2) -> dict:
    """Budget-dropout training on long clips (label at the last step); resumable from out/last.safetensors.

    Returns {"model", "ds" (the short clips, stacked), "frontend", "history", "steps_done", "seconds"}.
    """
    lc = lc or LongTrainConfig()
    import torch
    import torch.nn.functional as F

    from ..checkpoint import load_checkpoint, restore_training_state, save_checkpoint
    from ..config import ESSMConfig
    from ..model import ESSMModel
    from ..train import TrainConfig, evaluate, make_optimizer, sample_budget, warmup_cosine

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds, frontend = load_features(data_dir)
    ds = stack_frames(ds, stack)
    frontend = dict(frontend, stack=stack)
    z = np.load(Path(data_dir) / "long.npz")
    XL, yL, XLt, yLt = z["X_train"], z["y_train"], z["X_test"], z["y_test"]
    extra = sorted(Path(data_dir).glob("long_extra*.npz"))        # more training clips (other seeds)
    if extra:
        zs = [np.load(f) for f in extra]
        XL = np.concatenate([XL] + [e["X_train"] for e in zs])
        yL = np.concatenate([yL] + [e["y_train"] for e in zs])
    log.info("long clips: %d train, %d test", len(yL), len(yLt))
    last = out / "last.safetensors"
    if last.is_file():
        model, meta = load_checkpoint(last)
    elif lc.init:
        model, meta = load_checkpoint(lc.init)
        meta = None
    else:
        model = ESSMModel(ESSMConfig(d_in=ds.d_in, d_out=ds.n_classes, seq_len=64, d_model=lc.d_model, n_layers=2,
                                     d_gate=32, head="mean", pool_window=50, k_max=32))
        meta = None
    cfg = model.cfg
    opt = make_optimizer(model, lc.lr, lc.weight_decay)
    clock = {"frac": 0.0}       # share of max_minutes spent: the cosine ends with the steps or the time
    sched = warmup_cosine(opt, lc.warmup_steps, lc.steps, clock)
    start, history = 0, []
    if meta is not None:
        start = restore_training_state(meta, opt, sched)
        history = list(meta["train"].get("history", []))
        log.info("resumed %s at step %d", last, start)
    tc = TrainConfig(task="kws12-long")                        # budget dropout: uniform K on 1..K̄
    t0 = time.perf_counter()
    ema = None

    def ev():
        rows = {}
        for K in (4, 32):
            rows[f"long K={K}"] = evaluate(model, XLt, yLt, K)
            rows[f"clip K={K}"] = evaluate(model, ds.X_test, ds.y_test, K)
        return rows

    done = start
    for step in range(start, lc.steps):
        rng = np.random.default_rng((lc.seed, step))
        short = rng.random() < lc.p_short
        X, y = (ds.X_train, ds.y_train) if short else (XL, yL)
        idx = rng.integers(0, len(X), lc.batch_size)
        # Long clips cropped to their last 2L..3L steps: the stream's history varies (resets, start of
        # the stream) and the shorter crops are cheaper (the Toeplitz convolution is O(T^2)).
        T = X.shape[1] if short else int(rng.choice(np.arange(lc.min_steps, X.shape[1] + 1, 16)))
        K = sample_budget(rng, tc, cfg, T)
        model.train()
        logits = model(torch.from_numpy(np.ascontiguousarray(X[idx, -T:])), K)
        loss = F.cross_entropy(logits[:, -1].float(), torch.from_numpy(y[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        clock["frac"] = (time.perf_counter() - t0) / 60 / lc.max_minutes
        sched.step()
        lv = float(loss.detach())
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        done = step + 1
        if done % lc.log_every == 0:
            log.info("step %d loss %.4f lr %.2e %.2f s/step", done, ema, sched.get_last_lr()[0],
                     (time.perf_counter() - t0) / (done - start))
        stop = (time.perf_counter() - t0) / 60 > lc.max_minutes
        if done % lc.eval_every == 0 or done == lc.steps or stop:
            accs = ev()
            history.append({"step": done, "loss": ema, "acc": accs})
            log.info("step %d eval %s", done, " ".join(f"{k}:{v:.3f}" for k, v in accs.items()))
        if done % lc.ckpt_every == 0 or done == lc.steps or stop:
            save_checkpoint(last, model, opt, sched, {"step": done, "history": history, "config": asdict(lc)})
        if stop:
            log.info("stopping at step %d: max_minutes %.1f reached", done, lc.max_minutes)
            break
    model.eval()
    save_checkpoint(out / "model.safetensors", model, train_state={"step": done, "history": history,
                                                                  "config": asdict(lc)})
    return {"model": model, "ds": ds, "frontend": frontend, "history": history, "steps_done": done,
            "seconds": time.perf_counter() - t0}


def finish_long(data_dir, out_dir, lc: LongTrainConfig, install: bool = False) -> dict:
    """train_long, then the clip sweep, the compiled program (out/kws.essm) and results.json."""
    from ..sweep import budget_sweep

    r = train_long(data_dir, Path(out_dir) / "essm", lc)
    model, ds = r["model"], r["ds"]
    sweep = budget_sweep(model, ds.X_test, ds.y_test, PROFILE_KS, progress=False)
    note = (f"long-clip fine-tune: {r['steps_done']} steps from {lc.init or 'scratch'} "
            f"({r['seconds']:.0f} s on CPU this leg)")
    prog = build_program(model, r["frontend"], sweep, note=note)
    out = Path(out_dir)
    prog.save(out / "kws.essm")
    res = {"essm": {"sweep": sweep, "train_s": r["seconds"], "steps": r["steps_done"], "config": asdict(lc),
                    "history": r["history"], "params": int(sum(p.numel() for p in model.parameters())),
                    "program_bytes": (out / "kws.essm").stat().st_size}}
    atomic_write_text(out / "results.json", json.dumps(res, indent=1))
    if install:
        dst = Path(__file__).resolve().parent.parent / "assets" / "kws_default.essm"
        shutil.copyfile(out / "kws.essm", dst)
        res["installed"] = str(dst)
    return res
