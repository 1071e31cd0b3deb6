"""Training with budget dropout (paper Alg. 2): one K_train per minibatch, the same masked forward as
inference, AdamW, cosine schedule with warm-up, gradient clipping, AMP on CUDA, seeded, resumable,
and multi-GPU / multi-process through `torchrun` + DDP (gloo on CPU, nccl on CUDA).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoint import atomic_write_bytes, load_checkpoint, restore_training_state, save_checkpoint
from .config import ESSMConfig
from .errors import ConfigError, NonFiniteInputError
from .model import ESSMModel
from .tasks import SequenceDataset, make_task

log = logging.getLogger(__name__)

K_DISTS = ("uniform", "linear", "fixed")
MODEL_KINDS = ("essm", "lru")


@dataclass
class TrainConfig:
    task: str = "digits"
    task_kwargs: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)        # ESSMConfig overrides (d_in/d_out/seq_len come from the task)
    steps: int = 1000
    batch_size: int = 64                              # global batch, split across DDP ranks
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    k_dist: str = "uniform"      # uniform on {1..K̄} (paper); linear: P(k) ∝ k; fixed: always k_train
    k_train: int = 32            # the budget used when k_dist == "fixed" (and by variants without dropout)
    k_min: int = 1               # smallest budget budget-dropout draws
    per_step_k: float = 0.0      # probability that a minibatch gets a random per-step K schedule instead
    amp: bool = True             # autocast on CUDA (bf16 where supported, else fp16 + GradScaler)
    device: str = "auto"
    out_dir: str = "runs/model"
    eval_every: int = 200
    ckpt_every: int = 200
    eval_k: tuple = (1, 2, 4, 8, 32)
    resume: bool = False
    model_kind: str = "essm"     # essm | lru (the CompreSSM peer, essm_stream/lru.py)
    compress: dict = field(default_factory=dict)  # lru only: CompressRule fields, e.g. {"energy": 0.99, "at": [0.2, 0.4]}

    def __post_init__(self):
        if self.k_dist not in K_DISTS:
            raise ConfigError(f"k_dist must be one of {K_DISTS}, got {self.k_dist!r}")
        for name in ("steps", "batch_size", "eval_every", "ckpt_every", "k_train", "k_min"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.per_step_k <= 1.0:
            raise ConfigError(f"per_step_k is a probability, got {self.per_step_k}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        self.eval_k = tuple(int(k) for k in self.eval_k)
        if self.model_kind not in MODEL_KINDS:
            raise ConfigError(f"model_kind must be one of {MODEL_KINDS}, got {self.model_kind!r}")
        if self.compress and self.model_kind != "lru":
            raise ConfigError("compress (CompreSSM in-training reduction) applies to model_kind='lru' only")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown TrainConfig keys {unknown}")
        return cls(**d)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sample_budget(rng: np.random.Generator, tc: TrainConfig, cfg: ESSMConfig, T: int):
    """K_train for one minibatch: an int, or a (T,) LongTensor schedule (piecewise-constant runs)."""
    if not cfg.budget_dropout:
        return cfg.k_max  # base and gate_only train at full capacity (paper §6.1)
    if tc.k_dist == "fixed":
        return min(tc.k_train, cfg.k_max)
    ks = np.arange(tc.k_min, cfg.k_max + 1)
    p = np.ones(len(ks)) if tc.k_dist == "uniform" else ks.astype(float)
    p /= p.sum()
    if tc.per_step_k > 0 and rng.random() < tc.per_step_k:
        # Runs of random length with a fresh K each, so the model sees budgets change mid-sequence.
        sched = np.empty(T, np.int64)
        t = 0
        while t < T:
            n = int(rng.integers(1, max(2, T // 4) + 1))
            sched[t:t + n] = rng.choice(ks, p=p)
            t += n
        return torch.from_numpy(sched)
    return int(rng.choice(ks, p=p))


def task_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the last step (sequence labels) or at every step (per-step labels)."""
    if y.dim() == 1:
        return F.cross_entropy(logits[:, -1].float(), y)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def evaluate(model, X: np.ndarray, y: np.ndarray, K, batch_size: int = 256, device="cpu") -> float:
    """Accuracy at budget K (last-step decision for sequence labels, per-step otherwise)."""
    model.eval()
    correct = total = 0
    for i in range(0, len(X), batch_size):
        xb = torch.from_numpy(X[i:i + batch_size]).to(device)
        yb = torch.from_numpy(y[i:i + batch_size]).to(device)
        logits = model(xb, K)
        pred = logits[:, -1].argmax(-1) if yb.dim() == 1 else logits.argmax(-1)
        correct += int((pred == yb).sum())
        total += yb.numel()
    return correct / max(total, 1)


def model_config_for(ds: SequenceDataset, overrides: dict, kind: str = "essm"):
    # Sequence labels are read from the last step's output (measured: a mean-pooled head over the
    # whole window learns digits markedly slower); per-step labels from every step's.
    kw = dict(d_in=ds.d_in, d_out=ds.n_classes, seq_len=ds.seq_len)
    kw.update(overrides)
    if kind == "lru":
        from .lru_config import LRUConfig
        return LRUConfig(**kw)
    return ESSMConfig(**kw)


def build_model(cfg):
    """The torch model for a config: ESSMModel, or LRUModel for an LRUConfig."""
    if getattr(cfg, "kind", "essm") == "lru":
        from .lru import LRUModel
        return LRUModel(cfg)
    return ESSMModel(cfg)


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, LayerNorm gains or 1-D vectors)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))


def warmup_cosine(opt, warmup_steps: int, steps: int, clock: dict | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over warmup_steps, then cosine decay to 5% of the peak at `steps`.

    clock: for a time-bounded run, a dict whose "frac" the caller keeps at the share of its time
    budget spent; the cosine then follows whichever runs out first, the steps or the time, so a run
    stopped by its budget still ends annealed."""
    def lr_lambda(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        prog = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
        if clock is not None:
            prog = min(1.0, max(clock["frac"], prog))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * prog))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


MAX_NONFINITE_STEPS = 100   # steps in a row with a non-finite loss or gradient before training stops with an error


def optimizer_step(loss, model, opt, scaler, clip: float, skipped: int, step: int) -> int:
    """Backward, unscale, clip, then the update unless the loss or a gradient is not finite: a NaN must
    never reach the weights (bf16 autocast has no GradScaler to catch it; the fp16 one skips such
    steps itself). Costs one device sync per step. Returns the count of non-finite steps in a row
    (0 after a good one); MAX_NONFINITE_STEPS in a row raise NonFiniteInputError. Under DDP the
    gradients are already averaged, so every rank decides alike."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    finite = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
    if finite or scaler.is_enabled():
        scaler.step(opt)
    scaler.update()
    if finite:
        return 0
    skipped += 1
    log.warning("step %d: non-finite loss or gradient (%s), update skipped", step, float(loss.detach()))
    if skipped >= MAX_NONFINITE_STEPS:
        raise NonFiniteInputError(f"training diverged: {skipped} steps in a row with a non-finite loss or gradient "
                                  f"at step {step} (lower the learning rate, or turn AMP off); the last "
                                  f"checkpoint holds finite weights")
    return skipped


def _dist_info() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def train(tc: TrainConfig, ds: SequenceDataset | None = None, progress: bool = True) -> dict:
    """Train one model; returns a summary dict. Under torchrun every rank calls this."""
    rank, world, local_rank = _dist_info()
    device = pick_device(tc.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(tc.seed)
    if ds is None:
        ds = make_task(tc.task, seed=tc.seed, **tc.task_kwargs)
    cfg = model_config_for(ds, tc.model, tc.model_kind)
    out = Path(tc.out_dir)
    last = out / "last.safetensors"

    model = build_model(cfg).to(device)
    opt = make_optimizer(model, tc.lr, tc.weight_decay)
    sched = warmup_cosine(opt, tc.warmup_steps, tc.steps)
    start, history = 0, []
    rule, compress_at, compress_log = None, [], []
    if tc.compress:
        from .compressm import CompressRule
        rule = CompressRule(**tc.compress)
        compress_at = rule.steps(tc.steps)
        if world > 1:
            raise ConfigError("in-training compression replaces parameters; run it in one process (no DDP)")
    if tc.resume and last.is_file():
        loaded, meta = load_checkpoint(last, device=device)
        if loaded.cfg != cfg and not (rule is not None and dataclasses.replace(loaded.cfg, states=()) == cfg):
            raise ConfigError(f"cannot resume {last}: its config {loaded.cfg} differs from this run's {cfg}")
        if loaded.cfg != cfg:  # an LRU reduced before the checkpoint: continue at its reduced sizes
            cfg, model = loaded.cfg, build_model(loaded.cfg).to(device)
            opt = make_optimizer(model, tc.lr, tc.weight_decay)
            sched = warmup_cosine(opt, tc.warmup_steps, tc.steps)
            compress_log = list(meta["train"].get("compress", []))
        model.load_state_dict(loaded.state_dict())
        start = restore_training_state(meta, opt, sched)
        history = list(meta["train"].get("history", []))
        log.info("resumed %s at step %d", last, start)

    use_amp = tc.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    N, T = len(ds.X_train), ds.seq_len
    if tc.batch_size % world:
        raise ConfigError(f"batch_size={tc.batch_size} must be divisible by the {world} DDP ranks")
    per_rank = tc.batch_size // world
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=tc.steps, initial=start, desc=f"train {ds.name} {cfg.variant}", unit="step")
    t0 = time.perf_counter()
    loss_ema, skipped = None, 0
    batches_per_epoch = max(1, N // tc.batch_size)
    for step in range(start, tc.steps):
        # Batch order and K_train are pure functions of (seed, step): identical on every rank, and a
        # resumed run draws exactly what the uninterrupted run would have drawn.
        epoch, j = divmod(step, batches_per_epoch)
        perm = np.random.default_rng((tc.seed, epoch)).permutation(N)
        idx = perm[j * tc.batch_size:(j + 1) * tc.batch_size][rank * per_rank:(rank + 1) * per_rank]
        K = sample_budget(np.random.default_rng((tc.seed, step, 1)), tc, cfg, T)
        xb = torch.from_numpy(ds.X_train[idx]).to(device, non_blocking=True)
        yb = torch.from_numpy(ds.y_train[idx]).to(device, non_blocking=True)
        net.train()
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            loss = task_loss(net(xb, K), yb)
        skipped = optimizer_step(loss, model, opt, scaler, tc.grad_clip, skipped, step + 1)
        sched.step()
        if rule is not None and step + 1 in compress_at:
            from .compressm import reduce_model
            ev = reduce_model(model, rule, opt)  # the optimizer follows the replaced parameters
            cfg = model.cfg
            compress_log.append({"step": step + 1, "ranks": ev["ranks"], "reduced": ev["reduced"], "hsv": ev["hsv"]})
            log.info("step %d: CompreSSM ranks %s", step + 1, ev["ranks"])
        lv = float(loss.detach())
        if math.isfinite(lv):
            loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.3f}", K=K if isinstance(K, int) else "sched")
        done = step + 1
        if done % tc.eval_every == 0 or done == tc.steps:
            if rank == 0:
                eval_k = tc.eval_k if cfg.k_max > 1 else (1,)   # an LRU has one budget
                accs = {k: evaluate(model, ds.X_test, ds.y_test, min(k, cfg.k_max), device=device) for k in eval_k}
                history.append({"step": done, "loss": loss_ema, "acc": accs})
                if tc.model_kind == "lru":
                    history[-1]["ranks"] = list(cfg.layer_states())
                log.info("step %d loss %.4f test acc %s", done, loss_ema,
                         " ".join(f"K={k}:{a:.3f}" for k, a in accs.items()))
        if (done % tc.ckpt_every == 0 or done == tc.steps) and rank == 0:
            state = {"step": done, "task": ds.name, "train_config": dataclasses.asdict(tc), "history": history}
            if compress_log:
                state["compress"] = compress_log
            save_checkpoint(last, model, opt, sched, state)
        if world > 1:
            dist.barrier()
    if bar is not None:
        bar.close()
    summary = {"task": ds.name, "variant": cfg.variant, "steps": tc.steps, "seconds": time.perf_counter() - t0,
               "history": history, "config": cfg.to_dict()}
    if tc.model_kind == "lru":
        summary["model_kind"] = "lru"
        summary["compress"] = compress_log
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / "model.safetensors", model, train_state={
            "step": tc.steps, "task": ds.name, "train_config": dataclasses.asdict(tc), "history": history,
            **({"compress": compress_log} if compress_log else {})})
        atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    summary["model"] = model
    return summary
