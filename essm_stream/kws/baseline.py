"""A compact CNN keyword baseline on the same clips: TC-ResNet8 (Choi et al., Interspeech 2019).

Temporal convolutions over time with the 40 mel bins as input channels: a 3-tap stem to 16
channels, three residual blocks (24, 32, 48 channels, stride 2, 9-tap kernels), global average
pool, linear. Width multiplier 1 as in the paper (≈ 66k parameters). Not causal and not elastic:
it reads the whole 1.28 s clip, the reference point the paper's Table 5 compares against.
"""
from __future__ import annotations

import time

import numpy as np


def _tcresnet(n_in: int, n_classes: int, widths=(16, 24, 32, 48)):
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv1d(cin, cout, 9, stride, padding=4, bias=False)
            self.b1 = nn.BatchNorm1d(cout)
            self.c2 = nn.Conv1d(cout, cout, 9, 1, padding=4, bias=False)
            self.b2 = nn.BatchNorm1d(cout)
            self.skip = nn.Sequential(nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout)) \
                if (stride != 1 or cin != cout) else nn.Identity()

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            return F.relu(self.b2(self.c2(y)) + self.skip(x))

    class TCResNet8(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv1d(n_in, widths[0], 3, padding=1, bias=False)
            self.blocks = nn.Sequential(*[Block(a, b, 2) for a, b in zip(widths[:-1], widths[1:])])
            self.fc = nn.Linear(widths[-1], n_classes)

        def forward(self, x):                       # x (B, T, n_mels)
            h = self.blocks(self.stem(x.transpose(1, 2)))
            return self.fc(h.mean(-1))

    return TCResNet8()


def train_baseline(ds, epochs: int = 12, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                   progress: bool = True) -> dict:
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = _tcresnet(ds.d_in, ds.n_classes)
    n = len(ds.X_train)
    steps = epochs * (n // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    Xtr, ytr = torch.from_numpy(ds.X_train), torch.from_numpy(ds.y_train)
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc="train TC-ResNet8", disable=not progress)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        perm = torch.from_numpy(rng.permutation(n))
        for j in range(n // batch_size):
            idx = perm[j * batch_size:(j + 1) * batch_size]
            model.train()
            loss = F.cross_entropy(model(Xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}")
    bar.close()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(ds.X_test[i:i + 512])).argmax(-1)
                          for i in range(0, len(ds.X_test), 512)])
    acc = float((pred.numpy() == ds.y_test).mean())
    return {"name": "TC-ResNet8", "acc": acc, "params": int(sum(p.numel() for p in model.parameters())),
            "train_s": time.perf_counter() - t0, "epochs": epochs}
