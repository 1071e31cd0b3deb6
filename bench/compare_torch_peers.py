"""Tuned torch peer vs the older TorchStep, interleaved: python bench/compare_torch_peers.py (edge, B=1)."""
import sys, numpy as np, torch
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from targets import make_program, _median_step
from peers import TunedTorchStep, TorchStep
torch.set_num_threads(1)
prog = make_program("edge")
rng = np.random.default_rng(0)
fr = [torch.from_numpy(f) for f in rng.standard_normal((16, 1, 40)).astype(np.float32)]
for K in (4, 32):
    a, b = TorchStep(prog, 1, K), TunedTorchStep(prog, 1, K)
    r = []
    for _ in range(5):
        ta, tb = _median_step(a.step, fr, 200), _median_step(b.step, fr, 200)
        r.append((ta, tb))
    r = np.array(r) * 1e6
    q = r[:, 0] / r[:, 1]
    print(f"K={K}: TorchStep {np.median(r[:, 0]):.0f} us, Tuned {np.median(r[:, 1]):.0f} us, ratio {np.median(q):.2f} [{q.min():.2f}-{q.max():.2f}]")
