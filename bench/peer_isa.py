"""Do the AVX2-emulation variables reach the peers? Times the bench's tuned torch step and ONNX Runtime
step (IO binding), edge B=1, as the current environment leaves them; run it once natively and once
under each setting of the variables (docs/PERFORMANCE.md, "On an AVX2-only machine"):

    python bench/peer_isa.py
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/peer_isa.py
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def median_us(fn, frames, n: int, rounds: int) -> tuple[float, float, float]:
    for f in frames[:3]:
        fn(f)
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(n):
            fn(frames[i % len(frames)])
        ts.append((time.perf_counter() - t0) / n * 1e6)
    return float(np.median(ts)), min(ts), max(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description="Times the tuned torch and ONNX Runtime peers as the environment leaves "
                                             "them: do the AVX2 emulation's variables reach them?",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="steps per round")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from peers import OnnxStep, TunedTorchStep
    from targets import make_program
    edge = make_program("edge")
    frames = list(np.random.default_rng(0).standard_normal((16, 1, edge.cfg.d_in)).astype(np.float32))
    env = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
           if k in os.environ}
    print(f"environment: {env or 'none of the variables set'}")
    for K in (32, 4):
        ts = TunedTorchStep(edge, 1, K)
        m, lo, hi = median_us(ts.step, [torch.from_numpy(f) for f in frames], a.steps, a.rounds)
        print(f"tuned torch edge B=1 K={K}: {m:.1f} µs [{lo:.1f}-{hi:.1f}]")
    m, lo, hi = median_us(OnnxStep(edge, 1, 32).step, frames, a.steps, a.rounds)
    print(f"ONNX Runtime edge B=1 K=32: {m:.1f} µs [{lo:.1f}-{hi:.1f}]")


if __name__ == "__main__":
    main()
