"""Training-step time of the ES-SSM layer's two convolution paths, measured side by side.

    python bench/train_step.py [--threads 1] [--reps 5]

Digits-sized model (B=64, T=L=64, d=32, 4 blocks, K̄=32): forward + backward + AdamW step at
K = 32 and K = 8, with the layer's convolution forced to the FFT path and to the banded Toeplitz
matmul (both are held to the same numpy reference in tests/test_model.py). Prints median seconds
per step and the ratio FFT / Toeplitz.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    import torch
    import torch.nn.functional as F

    from essm_stream.config import ESSMConfig
    from essm_stream.model import ESSMModel
    from essm_stream.train import make_optimizer

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = ESSMModel(ESSMConfig(d_in=1, d_out=10, d_model=32, n_layers=4, seq_len=64))
    opt = make_optimizer(model, 1e-3, 0.05)
    x, y = torch.randn(64, 64, 1), torch.randint(0, 10, (64,))
    print(f"| K | FFT s/step | Toeplitz s/step | FFT / Toeplitz |   ({a.threads} thread(s), median of {a.reps})")
    print("|---|---|---|---|")
    for K in (32, 8):
        med = {}
        for method in ("fft", "toeplitz"):
            for blk in model.blocks:
                blk.essm.conv_method = method
            times = []
            for _ in range(a.reps + 1):  # the first step warms allocators up and is dropped
                t0 = time.perf_counter()
                loss = F.cross_entropy(model(x, K)[:, -1], y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t0)
            med[method] = float(np.median(times[1:]))
        print(f"| {K} | {med['fft']:.3f} | {med['toeplitz']:.3f} | {med['fft'] / med['toeplitz']:.1f}x |")


if __name__ == "__main__":
    main()
