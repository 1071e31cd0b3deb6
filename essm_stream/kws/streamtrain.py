"""Stream training of the keyword ES-SSM on rendered multi-synthesizer streams (needs torch).

    python -m essm_stream.kws.streamtrain FEATS_DIR OUT_DIR --test-family festival [--kind embedding]
    (--test-family also takes held-out voices: festival:ked_diphone,festival:cmu_us_slt_arctic_hts)

Loss on crops of T steps of the rendered streams (render.py), at a budget K drawn per minibatch
(budget dropout, uniform on 1..K̄):
- every keyword: -log max_t p_t(keyword) over its end window (max-pooling: the spotter needs the
  posterior high at *some* step after the word, not at all of them);
- every background step (not inside a keyword's ignore zone): cross-entropy to `unknown` (speech)
  or `silence`, plus the same on the 10% hardest background steps of the minibatch;
- hard-negative mining: every `mine_every` steps the model runs over all training streams and the
  background steps where a keyword's posterior exceeds 0.3 become crop anchors (a third of the
  crops end just after one), so the false accepts of the current model are trained on next.
Validation (checkpoint choice): hit rate at <= 6 false accepts/h on the fold's validation voices'
streams (never the held-out family), K = K̄. Resumable: OUT/last.safetensors every ckpt_every steps; the cosine
schedule is bounded by a budget of the process's CPU minutes (max_minutes), or wall minutes with
--budget-clock wall.

On a GPU (--device cuda): the training streams sit on the device as one array and a minibatch is a
gather from it (crops are drawn on the host, as index arrays); augmentation runs on the device;
the forward runs under bf16 autocast (--amp 1), the loss in float32.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import data as D
from ..fileio import atomic_write_text
from . import voices as V

log = logging.getLogger(__name__)
N_KW = len(D.KEYWORDS)


@dataclass
class StreamTrainConfig:
    test_family: str = "festival"
    kind: str = "embedding"          # embedding | logmel
    d_model: int = 32
    n_layers: int = 2
    seq_len: int = 32                # L: 32 steps x 80 ms = 2.56 s
    k_max: int = 32
    d_gate: int = 32
    dropout: float = 0.0
    crop: int = 64
    batch_size: int = 32
    steps: int = 3000
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    mine_every: int = 600
    eval_every: int = 300
    ckpt_every: int = 100
    max_minutes: float = 1e9         # budget in CPU minutes of this process (time.process_time: a job paused by
                                     # SIGSTOP in another job's quiet window, or slowed by other load, keeps its budget)
    seed: int = 0
    extend: int = 0                  # 1: continue a finished run (resumed weights and optimizer, on possibly more
                                     # streams): the wall-time budget restarts and the mined anchors are dropped
    small_k_frac: float = 0.0        # share of minibatches whose budget is drawn uniform on 1..small_k_max instead
    small_k_max: int = 8             # of 1..K̄ (more training at small K: K = 4 retention)
    aug_shift: float = 0.0           # feature augmentation on the normalised embeddings, per crop: a constant
    aug_scale: float = 0.0           # offset N(0, aug_shift) and gain 1 + N(0, aug_scale) per feature (a voice's /
    aug_noise: float = 0.0           # channel's bias), white noise of std U(0, aug_noise) per step, and a share
    aug_drop: float = 0.0            # aug_drop of the features zeroed (0 = the mean)
    keep_every: int = 0              # > 0: also keep the weights every keep_every steps (OUT/step_N.safetensors),
                                     # so that the checkpoint can be chosen afterwards on the loso validation sets
    device: str = "cpu"              # cpu | cuda | cuda:N | auto (cuda when there is one)
    amp: int = 1                     # 1: bf16 autocast on CUDA (fp16 + GradScaler where bf16 is missing); no-op on CPU
    budget_clock: str = "cpu"        # what max_minutes counts: "cpu" (this process's CPU time) or "wall" (wall clock,
                                     # for a GPU job whose host thread waits on the device)

    def __post_init__(self):
        self.test_family = V.fold_name(self.test_family)   # a family, or held-out voices (a speaker fold)
        if not 0.0 <= self.small_k_frac <= 1.0:
            raise D.ConfigError(f"small_k_frac is a probability in [0, 1], got {self.small_k_frac}")
        if self.keep_every < 0:
            raise D.ConfigError(f"keep_every must be >= 0, got {self.keep_every}")
        if self.small_k_max < 1 or (self.small_k_frac > 0 and self.small_k_max > self.k_max):
            raise D.ConfigError(f"small_k_max must be in 1..k_max={self.k_max}, got {self.small_k_max}")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise D.ConfigError(f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        if self.budget_clock not in ("cpu", "wall"):
            raise D.ConfigError(f"budget_clock must be cpu or wall, got {self.budget_clock!r}")
        if self.batch_size < 1 or self.crop < 2:
            raise D.ConfigError(f"batch_size must be >= 1 and crop >= 2, got {self.batch_size}, {self.crop}")
        for f in ("aug_shift", "aug_scale", "aug_noise", "aug_drop"):
            v = getattr(self, f)
            if not (math.isfinite(v) and v >= 0) or (f == "aug_drop" and v >= 1):
                raise D.ConfigError(f"{f} must be >= 0{' and < 1' if f == 'aug_drop' else ''}, got {v}")


def augment_features(X, gen, sc: StreamTrainConfig):
    """Feature-space augmentation of a (B, T, d) torch minibatch of normalised features, in place on
    its device (returned): per crop a constant offset and gain per feature, per step white noise, per
    crop a random share of features set to 0 (their mean). gen: a torch.Generator on X's device.
    All zero = identity."""
    import torch

    B, T, d = X.shape
    kw = dict(generator=gen, device=X.device, dtype=X.dtype)
    if sc.aug_scale > 0:
        X.mul_(1 + sc.aug_scale * torch.randn((B, 1, d), **kw))
    if sc.aug_shift > 0:
        X.add_(sc.aug_shift * torch.randn((B, 1, d), **kw))
    if sc.aug_noise > 0:
        X.add_(sc.aug_noise * torch.rand((B, 1, 1), **kw) * torch.randn((B, T, d), **kw))
    if sc.aug_drop > 0:
        X.mul_((torch.rand((B, 1, d), **kw) >= sc.aug_drop).to(X.dtype))
    return X


def draw_budget(rng: np.random.Generator, sc: StreamTrainConfig, tc, cfg, T: int):
    """K for one minibatch: budget dropout (uniform on 1..K̄), except that a share small_k_frac of
    the minibatches draws K uniform on 1..small_k_max."""
    from ..train import sample_budget
    if sc.small_k_frac > 0 and rng.random() < sc.small_k_frac:
        return int(rng.integers(1, sc.small_k_max + 1))
    return sample_budget(rng, tc, cfg, T)


def load_streams(feats_dir, voices) -> list[dict]:
    """[{X (T, d) float16, y (T,), kw (n, 3), voice}] for the voices that have a features file."""
    out = []
    for v in voices:
        f = Path(feats_dir) / f"{v.replace(':', '_', 1)}.npz"
        if not f.is_file():
            continue
        z = np.load(f)
        X, y, kw, lens = z["X"] if "X" in z else dequantize(z), z["y"], z["kw"], z["lens"]
        s = 0
        for L in lens:
            k = kw[(kw[:, 1] >= s) & (kw[:, 2] < s + L)] - np.array([0, s, s])
            out.append({"X": X[s:s + L], "y": y[s:s + L], "kw": k, "voice": v})
            s += L
    return out


def dequantize(z) -> np.ndarray:
    """A packed features file's X (featpack.py: int8 steps of the normalised embedding) as float16."""
    X = z["Xq"].astype(np.float32) * np.float32(z["q_step"])
    return (X * z["q_std"].astype(np.float32) + z["q_mean"].astype(np.float32)).astype(np.float16)


def norm_stats(streams, group: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean/std; with group (log-mel: 40 bins stacked 8 per step), per bin, tiled."""
    X = np.concatenate([s["X"] for s in streams]).astype(np.float64)
    if group:
        Xg = X.reshape(-1, group)
        reps = X.shape[1] // group
        return np.tile(Xg.mean(0), reps), np.tile(Xg.std(0) + 1e-6, reps)
    return X.mean(0), X.std(0) + 1e-6


# ----------------------------------------------------------------------------- detection (numpy)
def simple_detect(P: np.ndarray, threshold: float, refractory: int = 12, rearm: float = 0.5) -> list[tuple[int, int]]:
    """(step, class) detections from per-step posteriors (T, C): the spotter's rule without its
    energy gate or smoothing (for validation during training only)."""
    kw = P[:, :N_KW]
    j = kw.argmax(1)
    pk = kw[np.arange(len(P)), j]
    top = P.argmax(1)
    armed = np.ones(N_KW, bool)
    last = -10 ** 9
    out = []
    for t in range(len(P)):
        armed |= kw[t] < rearm * threshold
        c = j[t]
        if pk[t] >= threshold and top[t] == c and armed[c] and t - last >= refractory:
            out.append((t, int(c)))
            last = t
            armed[c] = False
    return out


def score_steps(dets, kw: np.ndarray, tol_steps: int = 6) -> tuple[int, int]:
    """(hits, false accepts) of step detections against keyword windows [first - tol, last + tol]."""
    used = np.zeros(len(kw), bool)
    fa = 0
    for t, c in dets:
        m = np.nonzero((kw[:, 0] == c) & (kw[:, 1] - 3 * tol_steps <= t) & (t <= kw[:, 2] + tol_steps) & ~used)[0]
        if len(m):
            used[m[0]] = True
        else:
            fa += 1
    return int(used.sum()), fa


def val_metric(P_list, streams, hop_s: float, fa_target: float = 6.0, ths=np.linspace(0.3, 0.98, 18)) -> dict:
    hours = sum(len(s["y"]) for s in streams) * hop_s / 3600
    n_kw = sum(len(s["kw"]) for s in streams)
    best = {"hit_rate": 0.0, "threshold": 1.0, "fa_per_hour": 0.0}
    rows = []
    for th in ths:
        h = fa = 0
        for P, s in zip(P_list, streams):
            a, b = score_steps(simple_detect(P, th), s["kw"])
            h += a
            fa += b
        rows.append((float(th), h / max(1, n_kw), fa / hours))
        if fa / hours <= fa_target and h / max(1, n_kw) > best["hit_rate"]:
            best = {"hit_rate": h / max(1, n_kw), "threshold": float(th), "fa_per_hour": fa / hours}
    # graded score for checkpoint choice: mean best hit rate at <= 10, 30, 100 false accepts/h (the
    # augmented validation streams are dense and noisy, so few thresholds reach a low FA rate early on)
    best["pauc"] = float(np.mean([max([h for _, h, f in rows if f <= cap] or [0.0]) for cap in (10.0, 30.0, 100.0)]))
    best["curve"] = rows
    return best


# ----------------------------------------------------------------------------- training
def _posteriors(model, streams, mean, std, K, torch, device="cpu", batch: int = 64):
    """Per-step posteriors (T, C) of every stream at budget K. Streams of similar length run as one
    batch, padded at the end (the model is causal, so the padding changes no step before it)."""
    out: list = [None] * len(streams)
    order = sorted(range(len(streams)), key=lambda i: len(streams[i]["y"]))
    mean32, std32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    with torch.no_grad():
        for b0 in range(0, len(order), batch):
            idx = order[b0:b0 + batch]
            T = max(len(streams[i]["y"]) for i in idx)
            x = np.zeros((len(idx), T, len(mean32)), np.float32)
            for r, i in enumerate(idx):
                X = streams[i]["X"]
                x[r, :len(X)] = (X.astype(np.float32) - mean32) / std32
            p = torch.softmax(model(torch.from_numpy(x).to(device), K).float(), -1).cpu().numpy()
            for r, i in enumerate(idx):
                out[i] = p[r, :len(streams[i]["y"])]
    return out


def _keyword_table(tr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start offsets of the streams in the concatenation, keyword table (n, 3) = class, global first
    and last step sorted by first step, lengths)."""
    lens = np.array([len(s["y"]) for s in tr])
    off = np.concatenate([[0], np.cumsum(lens)[:-1]])
    kw = [np.asarray(s["kw"]).reshape(-1, 3) + np.array([0, o, o]) for s, o in zip(tr, off)]
    G = np.concatenate(kw).astype(np.int64) if kw else np.zeros((0, 3), np.int64)
    return off, G[np.argsort(G[:, 1], kind="stable")], lens


def draw_crops(rng: np.random.Generator, n: int, crop: int, off, lens, p_stream, anchors, G):
    """n crops of at most `crop` steps: global step indices (n, crop), a validity mask, and the
    keywords wholly inside each crop as rows (crop, class, first, last) in crop coordinates.
    A third of the crops (when there are mined anchors) end just after a hard-negative anchor."""
    use_a = (rng.random(n) < 1 / 3) if len(anchors) else np.zeros(n, bool)
    si = rng.choice(len(lens), size=n, p=p_stream)
    s0 = rng.integers(0, np.maximum(1, lens[si] - crop + 1))
    e = np.minimum(lens[si], s0 + crop)
    if use_a.any():
        A = np.asarray(anchors, np.int64)
        pick = A[rng.integers(len(A), size=int(use_a.sum()))]
        si[use_a] = pick[:, 0]
        e[use_a] = np.minimum(lens[pick[:, 0]], pick[:, 1] + rng.integers(1, 20, size=len(pick)))
        s0[use_a] = np.maximum(0, e[use_a] - crop)
    g0, g1 = off[si] + s0, off[si] + e
    rows = np.arange(crop)
    valid = rows[None, :] < (e - s0)[:, None]
    idx = np.where(valid, g0[:, None] + rows[None, :], 0)
    lo, hi = np.searchsorted(G[:, 1], g0), np.searchsorted(G[:, 1], g1)
    cnt = hi - lo
    b = np.repeat(np.arange(n), cnt)
    k = lo[b] + np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    inside = G[k, 2] < g1[b]
    b, k = b[inside], k[inside]
    kws = np.stack([b, G[k, 0], G[k, 1] - g0[b], G[k, 2] - g0[b]], 1) if len(k) else np.zeros((0, 4), np.int64)
    return idx, valid, kws


def _training_device(sc: StreamTrainConfig, torch):
    name = sc.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise D.ConfigError(f"device {sc.device!r} asked for, but CUDA is not available to this torch")
    return torch.device(name)


def train_fold(feats_dir, out_dir, sc: StreamTrainConfig) -> dict:
    import torch
    import torch.nn.functional as F

    from ..checkpoint import load_checkpoint, restore_training_state, save_checkpoint
    from ..config import ESSMConfig
    from ..model import ESSMModel
    from ..train import TrainConfig, make_optimizer, optimizer_step, warmup_cosine

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    torch.manual_seed(sc.seed)
    device = _training_device(sc, torch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fold = V.fold(sc.test_family)
    fdir = Path(feats_dir) / sc.kind
    tr = load_streams(fdir, fold["train"])
    va = load_streams(fdir, fold["val"])
    if not tr or not va:
        raise D.ConfigError(f"no rendered streams for fold {sc.test_family} in {fdir} (train {len(tr)}, val {len(va)})")
    if (out / "norm.json").is_file():                   # a resumed run keeps the normalisation it began with
        nm = json.loads((out / "norm.json").read_text())
        mean, std = np.asarray(nm["mean"]), np.asarray(nm["std"])
    else:
        mean, std = norm_stats(tr, 40 if sc.kind == "logmel" else None)
        atomic_write_text(out / "norm.json", json.dumps({"mean": mean.tolist(), "std": std.tolist()}))
    hop_s = 0.08
    n_tr_steps = sum(len(s["y"]) for s in tr)
    log.info("fold %s: %d train streams (%.1f h), %d val streams (%.1f h), device %s", sc.test_family, len(tr),
             n_tr_steps * hop_s / 3600, len(va), sum(len(s["y"]) for s in va) * hop_s / 3600, device)
    cfg = ESSMConfig(d_in=tr[0]["X"].shape[1], d_out=len(D.LABELS), d_model=sc.d_model, n_layers=sc.n_layers,
                     seq_len=sc.seq_len, k_max=sc.k_max, d_gate=sc.d_gate, head="step", dropout=sc.dropout)
    last = out / "last.safetensors"
    meta = None
    if last.is_file():
        model, meta = load_checkpoint(last)
    else:
        model = ESSMModel(cfg)
    model.to(device)
    opt = make_optimizer(model, sc.lr, sc.weight_decay)
    clock = {"frac": 0.0}       # share of max_minutes spent: the cosine ends with the steps or the time
    sched = warmup_cosine(opt, sc.warmup_steps, sc.steps, clock)
    start, history, anchors, best = 0, [], [], {"hit_rate": -1.0}
    if meta is not None:
        start = restore_training_state(meta, opt, sched)
        history = list(meta["train"].get("history", []))
        anchors = [tuple(a) for a in meta["train"].get("anchors", [])]
        best = meta["train"].get("best", best)
        clock["frac"] = float(meta["train"].get("clock_frac", 0.0))
        if sc.extend:                    # stream indices may have changed: anchors are re-mined at mine_every
            clock["frac"], anchors = 0.0, []
        log.info("resumed at step %d%s", start, " (extending: new time budget, anchors dropped)" if sc.extend else "")
    use_amp = bool(sc.amp) and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    tc = TrainConfig(task="kws-stream")
    meanf, stdf = mean.astype(np.float32), std.astype(np.float32)
    for st in tr + va:                                   # normalise once (float32 in memory)
        st["X"] = ((st["X"].astype(np.float32) - meanf) / stdf).astype(np.float32)
    zero, one = np.zeros_like(meanf), np.ones_like(stdf)
    # The training streams live on the device as one concatenation; a minibatch is a gather from it.
    cat = np.concatenate([s["X"] for s in tr])
    o = 0
    for st in tr:                                        # the streams become views of it: one copy on the host
        st["X"], o = cat[o:o + len(st["X"])], o + len(st["X"])
    X_all = torch.from_numpy(cat).to(device)             # (the same memory on the CPU)
    Y_all = torch.from_numpy(np.concatenate([s["y"] for s in tr]).astype(np.int64)).to(device)
    off, G, lens = _keyword_table(tr)
    p_stream = lens / lens.sum()
    now = time.process_time if sc.budget_clock == "cpu" else time.perf_counter
    t0, w0, c0 = now(), time.perf_counter(), time.process_time()
    spent0 = clock["frac"] * sc.max_minutes
    gen = torch.Generator(device=device)

    ema, skipped = None, 0
    done = start
    for step in range(start, sc.steps):
        rng = np.random.default_rng((sc.seed, step))
        gen.manual_seed(int(rng.integers(2 ** 62)))
        idx, valid, kk = draw_crops(rng, sc.batch_size, sc.crop, off, lens, p_stream, anchors, G)
        it = torch.from_numpy(idx).to(device, non_blocking=True)
        vt = torch.from_numpy(valid).to(device, non_blocking=True)
        X = X_all[it] * vt[..., None]
        yt = torch.where(vt, Y_all[it], -1)
        augment_features(X, gen, sc)
        K = draw_budget(rng, sc, tc, cfg, sc.crop)
        model.train()
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            z = model(X, K)
        logp = F.log_softmax(z.float(), -1)
        m = yt >= 0
        ce = -logp.gather(-1, yt.clamp(min=0)[..., None])[..., 0][m]
        loss_bg = ce.mean() + ce.topk(max(1, len(ce) // 10)).values.mean() if len(ce) else logp.sum() * 0
        if len(kk):
            span = int((kk[:, 3] - kk[:, 2]).max()) + 1
            ti = kk[:, 2:3] + np.arange(span)[None, :]
            vk = torch.from_numpy(ti <= kk[:, 3:4]).to(device)
            g = logp[torch.from_numpy(kk[:, 0:1]).to(device), torch.from_numpy(np.minimum(ti, sc.crop - 1)).to(device),
                     torch.from_numpy(kk[:, 1:2]).to(device)]                   # (n, span)
            loss_kw = -g.masked_fill(~vk, -1e4).max(1).values.mean()
        else:
            loss_kw = logp.sum() * 0
        loss = loss_bg + loss_kw
        skipped = optimizer_step(loss, model, opt, scaler, 1.0, skipped, step + 1)
        finite = skipped == 0
        clock["frac"] = (spent0 + (now() - t0) / 60) / sc.max_minutes
        sched.step()
        done = step + 1
        stop = clock["frac"] >= 1.0
        if (done % 25 == 0 or stop) and finite:
            lv = float(loss.detach())
            ema = lv if ema is None else 0.9 * ema + 0.1 * lv
            log.info("step %d loss %.3f (bg %.3f kw %.3f) lr %.2e", done, ema, float(loss_bg.detach()), float(loss_kw.detach()),
                     sched.get_last_lr()[0])
        if done % sc.mine_every == 0 and done < sc.steps and not stop:
            model.eval()
            P = _posteriors(model, tr, zero, one, cfg.k_max, torch, device)
            anchors = [(i, int(t)) for i, (p, s) in enumerate(zip(P, tr))
                       for t in np.nonzero((s["y"] >= 0) & (p[:, :N_KW].max(1) > 0.3))[0]]
            rng2 = np.random.default_rng(done)
            if len(anchors) > 4000:
                anchors = [anchors[i] for i in rng2.choice(len(anchors), 4000, replace=False)]
            log.info("step %d: mined %d hard-negative anchors", done, len(anchors))
        if done % sc.eval_every == 0 or done == sc.steps or stop:
            model.eval()
            vm = val_metric(_posteriors(model, va, zero, one, cfg.k_max, torch, device), va, hop_s)
            vm4 = val_metric(_posteriors(model, va, zero, one, 4, torch, device), va, hop_s)
            history.append({"step": done, "loss": ema, "val_k32": {k: v for k, v in vm.items() if k != "curve"},
                            "val_k4": {k: v for k, v in vm4.items() if k != "curve"}})
            log.info("step %d val K=32 %.3f at %.1f FA/h (th %.2f), score %.3f; K=4 %.3f, score %.3f", done,
                     vm["hit_rate"], vm["fa_per_hour"], vm["threshold"], vm["pauc"], vm4["hit_rate"], vm4["pauc"])
            if vm["pauc"] > best.get("pauc", -1.0):
                best = {k: v for k, v in vm.items() if k != "curve"} | {"step": done}
                save_checkpoint(out / "best.safetensors", model, train_state={"step": done, "best": best,
                                                                              "config": asdict(sc)})
        if done % sc.ckpt_every == 0 or done == sc.steps or stop:
            save_checkpoint(last, model, opt, sched, {"step": done, "history": history, "config": asdict(sc),
                                                      "anchors": anchors[:4000], "best": best,
                                                      "clock_frac": clock["frac"]})
        if sc.keep_every > 0 and (done % sc.keep_every == 0 or stop or done == sc.steps):   # the annealed end too
            save_checkpoint(out / f"step_{done}.safetensors", model, train_state={"step": done, "config": asdict(sc)})
        if stop:
            log.info("stopping at step %d: max_minutes reached", done)
            break
    res = {"fold": fold, "config": asdict(sc), "history": history, "best": best, "steps_done": done,
           "train_hours": n_tr_steps * hop_s / 3600, "seconds_this_leg": time.perf_counter() - w0,
           "cpu_seconds_this_leg": time.process_time() - c0,
           "device": str(device), "amp": str(amp_dtype) if use_amp else None}
    atomic_write_text(out / "train.json", json.dumps(res, indent=1, default=str))
    return res


def build_fold_program(out_dir, kind: str = "embedding", threshold: float = 0.7, note: str = "",
                       checkpoint: str = "last"):
    """Compile OUT/<checkpoint>.safetensors (the annealed last one by default; "best" = the validation
    choice) with its frontend (normalisation, labels, detector) -> OUT/kws.essm."""
    from ..checkpoint import load_checkpoint
    from ..compile import compile_model

    out = Path(out_dir)
    model, _ = load_checkpoint(out / f"{checkpoint}.safetensors")
    model.eval()
    nm = json.loads((out / "norm.json").read_text())
    if kind == "embedding":
        from .embed import embedding_params
        fe = embedding_params(mean=nm["mean"], std=nm["std"], stack=1)
    else:
        from .frontend import frontend_params
        fe = frontend_params(mean=nm["mean"][:40], std=nm["std"][:40], stack=8)
    fe["labels"] = list(D.LABELS)
    fe["detector"] = {"threshold": float(threshold), "smoothing_s": 0.0, "refractory_s": 1.0}
    fe["note"] = note
    prog = compile_model(model, frontend=fe)
    prog.save(out / "kws.essm")
    return prog


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="stream training of the keyword ES-SSM for one held-out family")
    ap.add_argument("feats")
    ap.add_argument("out")
    for f, v in asdict(StreamTrainConfig()).items():
        ap.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    ap.add_argument("--no-program", action="store_true",
                    help="train only; compile OUT/kws.essm later (the embedding frontend needs the openwakeword wheel)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        sc = StreamTrainConfig(**{f: getattr(a, f) for f in asdict(StreamTrainConfig())})
    except D.ConfigError as e:
        ap.error(str(e))
    train_fold(a.feats, a.out, sc)
    if not a.no_program:
        build_fold_program(a.out, sc.kind)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
