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
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import data as D
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
    (out / "results.json").write_text(json.dumps(res, indent=1))
    plot_sweeps({"ES-SSM (K̄=32, budget dropout)": sweep}, out / "sweep.png", title="KWS-12, unseen voices")
    if install:
        dst = Path(__file__).resolve().parent.parent / "assets" / "kws_default.essm"
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(out / "kws.essm", dst)
        res["installed"] = str(dst)
    return res
