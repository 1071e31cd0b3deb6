"""TC-ResNet8 (baseline.py) on the same frontend, data and folds as the stream-trained ES-SSM (needs torch).

It reads a sliding window of the last W = 16 embedding steps (1.28 s + the embedding's 0.78 s) and
is run at every step over the same held-out streams; its per-step posteriors go through the same
decision code (loso.replay) with a threshold chosen on the same validation streams.
Training windows end at a uniformly drawn step of a training stream; half of them inside a keyword's
end window (label = that keyword), the rest on background steps (unknown / silence, ignore zone excluded).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from . import data as D
from . import loso as L
from . import voices as V
from .streamtrain import load_streams, norm_stats

log = logging.getLogger(__name__)
W = 16


def train_tcresnet(feats_dir, out_dir, test_family: str, steps: int = 1500, batch: int = 64, lr: float = 3e-3,
                   seed: int = 0) -> dict:
    import torch
    import torch.nn.functional as F

    from .baseline import _tcresnet

    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fold = V.fold(test_family)
    tr = load_streams(Path(feats_dir) / "embedding", fold["train"])
    mean, std = norm_stats(tr)
    pos, neg = [], []
    for i, s in enumerate(tr):
        for c, a, z in s["kw"]:
            pos += [(i, t, int(c)) for t in range(max(a, W - 1), z + 1)]
        neg += [(i, int(t), int(s["y"][t])) for t in np.nonzero(s["y"] >= 0)[0] if t >= W - 1]
    model = _tcresnet(tr[0]["X"].shape[1], len(D.LABELS))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for step in range(steps):
        picks = [pos[j] for j in rng.integers(len(pos), size=batch // 2)] + \
                [neg[j] for j in rng.integers(len(neg), size=batch - batch // 2)]
        X = np.stack([(tr[i]["X"][t - W + 1:t + 1].astype(np.float32) - mean) / std for i, t, _ in picks])
        y = torch.tensor([c for _, _, c in picks])
        model.train()
        loss = F.cross_entropy(model(torch.from_numpy(X.astype(np.float32))), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0:
            log.info("tcresnet %s step %d loss %.3f", test_family, step + 1, loss.item())
    model.eval()
    from safetensors.torch import save as st_save

    from ..fileio import atomic_write_bytes
    atomic_write_bytes(out / "tcresnet.safetensors", st_save({k: v.contiguous() for k, v in model.state_dict().items()}))
    atomic_write_bytes(out / "tcresnet_norm.json", json.dumps({"mean": mean.tolist(), "std": std.tolist()}).encode())
    return {"seconds": time.perf_counter() - t0, "params": int(sum(p.numel() for p in model.parameters()))}


class TCResNetStream:
    """Per-step posteriors (as logits) of a trained TC-ResNet8 over a stream's raw features."""

    def __init__(self, out_dir):
        import torch

        from .baseline import _tcresnet
        nm = json.loads((Path(out_dir) / "tcresnet_norm.json").read_text())
        self.mean, self.std = np.asarray(nm["mean"], np.float32), np.asarray(nm["std"], np.float32)
        self.model = _tcresnet(len(self.mean), len(D.LABELS))
        from safetensors.torch import load_file            # weights only: no pickle
        self.model.load_state_dict(load_file(str(Path(out_dir) / "tcresnet.safetensors")))
        self.model.eval()
        self.torch = torch

    def outputs(self, F: np.ndarray) -> np.ndarray:
        Xn = ((F.astype(np.float32) - self.mean) / self.std).astype(np.float32)
        Y = np.zeros((len(F), len(D.LABELS)), np.float32)
        Y[:, D.SILENCE] = 10.0                                       # before a full window: silence
        idx = np.arange(W - 1, len(F))
        with self.torch.no_grad():
            for i in range(0, len(idx), 2048):
                b = idx[i:i + 2048]
                win = np.stack([Xn[t - W + 1:t + 1] for t in b])
                Y[b] = self.model(self.torch.from_numpy(win)).numpy()
        return Y


def evaluate_tcresnet(family: str, sets_dir, model_dir, spotter, fa_target: float = 2.0, fa_on: str = "all",
                      model=None) -> dict:
    """Threshold on the fold's validation sets by the ES-SSM's rule (loso.pick_threshold with the same
    fa_target and fa_on), then every test condition present (keyword + keyword-free streams), with the
    whole threshold sweep of each kept as its DET curve (kw_curve / neg_curve, reporting only).
    model: anything with .outputs(F) (default: the TC-ResNet8 stored in model_dir)."""
    tc = model if model is not None else TCResNetStream(model_dir)
    sets_dir = Path(sets_dir)

    def rows(sets):
        per = [L.sweep_thresholds(spotter, tc.outputs(s["F"]), s["levels"], s["times"], s["events"],
                                  len(s["pcm"]) / 16000) for s in sets]
        return [{"threshold": p0["threshold"], "hits": sum(p[i]["hits"] for p in per),
                 "keywords": sum(p[i]["keywords"] for p in per),
                 "false_accepts": sum(p[i]["false_accepts"] for p in per), "hours": sum(p[i]["hours"] for p in per),
                 "hit_rate": sum(p[i]["hits"] for p in per) / max(1, sum(p[i]["keywords"] for p in per))}
                for i, p0 in enumerate(per[0])]

    vk = rows([L.load_set(p) for p in sorted(sets_dir.glob(f"val_{family}_kw_*.npz"))])
    vn = rows([L.load_set(p) for p in sorted(sets_dir.glob(f"val_{family}_neg_*.npz"))])
    choice = L.pick_threshold(vk, vn, fa_target, fa_on)
    th = choice["threshold"]
    res = {"threshold": th, "val_choice": choice, "fa_on": fa_on, "fa_target": fa_target}
    for snr in L.SNRS:
        name = L.snr_name(snr)
        kw, neg = L.load_condition(sets_dir, "test", family, name)
        if not kw:
            continue
        rk, rn = rows(kw), (rows(neg) if neg else None)
        a = min(rk, key=lambda r: abs(r["threshold"] - th))
        b = min(rn, key=lambda r: abs(r["threshold"] - th)) if rn else {"false_accepts": 0, "hours": 0.0}
        res[name] = {"hit_rate": a["hit_rate"], "hits": a["hits"], "keywords": a["keywords"],
                     "fa_neg": b["false_accepts"], "fa_per_hour_neg": b["false_accepts"] / max(b["hours"], 1e-9),
                     "neg_hours": b["hours"], "fa_in_kw_stream": a["false_accepts"], "kw_hours": a["hours"],
                     "kw_curve": rk, "neg_curve": rn}
    return res


if __name__ == "__main__":                     # python -m essm_stream.kws.baseline_stream FEATS OUT FAMILY [STEPS]
    import sys
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(train_tcresnet(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 1500))
