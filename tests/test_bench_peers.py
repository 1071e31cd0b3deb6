"""The tuned torch peer of the benchmark (bench/peers.py:TunedTorchStep) computes what the engine
computes: same program, same frames, outputs within float32 tolerance at several budgets K, B = 1
(the addmv path) and B > 1 (the batched path), across a ring wrap-around and with K changing
between steps. Tolerance: |y_peer - y_ref| <= 2e-4 + 2e-4 |y_ref| against the float64 engine
(both float32 paths reassociate sums differently; the outputs are O(1) after LayerNorm).
"""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from essm_stream.config import VARIANT_GATE, ESSMConfig  # noqa: E402
from essm_stream.engine import StreamEngine, tiny_program  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from peers import TunedTorchStep  # noqa: E402

ATOL = RTOL = 2e-4
UNGATED = next(v for v, g in VARIANT_GATE.items() if not g)


def _cfg(**kw):
    base = dict(d_in=5, d_out=3, d_model=16, n_layers=2, seq_len=12, k_max=8, d_gate=8)
    base.update(kw)
    return ESSMConfig(**base)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("kw", [{}, dict(variant=UNGATED, mlp=False)])
def test_tuned_torch_peer_matches_engine(B, kw):
    cfg = _cfg(**kw)
    prog = tiny_program(cfg, seed=3)
    torch.set_num_threads(1)
    ref = StreamEngine(prog, batch=B, dtype=np.float64)
    rng = np.random.default_rng(0)
    T = 2 * cfg.seq_len + 5                    # past the ring's wrap-around
    X = rng.standard_normal((T, B, cfg.d_in))
    Ks = [1, 3, cfg.k_max, 2, 5]               # changed between steps
    peer = TunedTorchStep(prog, B, Ks[0])
    worst = 0.0
    for t in range(T):
        K = Ks[t % len(Ks)]
        peer.set_K(K)
        y_ref = ref.step(X[t], K).copy()
        y = peer.step(torch.from_numpy(X[t].astype(np.float32))).numpy().astype(np.float64)
        err = np.abs(y - y_ref) - RTOL * np.abs(y_ref)
        worst = max(worst, float(np.max(err)))
    assert worst <= ATOL, f"peer vs float64 engine: max |err| - rtol|y| = {worst:.2e} > {ATOL}"


@pytest.mark.parametrize("K", [1, 4, 8])
def test_tuned_torch_peer_matches_float32_engine_fixed_K(K):
    cfg = _cfg()
    prog = tiny_program(cfg, seed=1)
    torch.set_num_threads(1)
    eng = StreamEngine(prog, batch=1, dtype=np.float32)
    peer = TunedTorchStep(prog, 1, K)
    rng = np.random.default_rng(K)
    for t in range(cfg.seq_len + 4):
        x = rng.standard_normal(cfg.d_in).astype(np.float32)
        y_e = eng.step(x, K).astype(np.float64)
        y_p = peer.step(torch.from_numpy(x[None])).numpy()[0].astype(np.float64)
        np.testing.assert_allclose(y_p, y_e, rtol=RTOL, atol=ATOL)


def test_tuned_torch_peer_refuses_pooled_head():
    cfg = _cfg(head="mean", pool_window=3)
    with pytest.raises(ValueError, match="step head"):
        TunedTorchStep(tiny_program(cfg), 1, 2)


def test_onnx_peer_with_io_binding_matches_engine():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from peers import OnnxStep
    cfg = _cfg()
    prog = tiny_program(cfg, seed=2)
    K = 5
    ref = StreamEngine(prog, batch=2, dtype=np.float64)
    on = OnnxStep(prog, 2, K)
    rng = np.random.default_rng(1)
    for t in range(cfg.seq_len + 5):           # past one full window: the state ping-pong is exercised
        x = rng.standard_normal((2, cfg.d_in))
        y_ref = ref.step(x, K)
        y = on.step(x.astype(np.float32)).astype(np.float64)
        np.testing.assert_allclose(y, y_ref, rtol=RTOL, atol=ATOL)


def test_target_lines_pass_and_fall_short():
    """bench --targets: a line says PASS only when the median over rounds meets the target's sense."""
    from targets import lines
    res = {"samples_s": {"engine edge B=1 K=32": [1e-4, 1.1e-4, 0.9e-4]},
           "ratios": {"edge B=1 K=32 vs tuned torch": [6.0, 4.0, 5.5],          # median 5.5 >= 5: pass
                      "edge B=32 K=32 per-stream / B=1": [0.5, 0.3, 0.4],        # median 0.4 > 0.35: short
                      "edge B=1 K=32 % of sgemm": [54.0, 56.0, 55.0]},           # median 55 >= 55: pass
           "bytes": {"edge B=1 K=32": 2.7e6, "paper B=1 K=32": 8.7e7}}
    out = "\n".join(lines(res))

    def row(name):
        return next(ln for ln in out.splitlines() if name in ln and ln.startswith(("PASS", "FALL")))
    assert row("vs tuned torch").startswith("PASS") and "5.50x" in out and "[4.00-6.00]" in out
    assert row("per-stream / B=1").startswith("FALL SHORT")
    assert row("% of sgemm").startswith("PASS")
    assert "paper B=1 K=32 87.0 MB" in out
    res["bytes"]["paper B=1 K=32"] = 0                    # --no-paper: the paper's working set is not claimed
    assert "paper" not in "\n".join(lines(res))


def test_target_lines_state_the_batch_bound_from_sgemm():
    """The B=32 per-stream target's lowest reachable value on one thread: B=32's flops at the round's
    sgemm rate, per stream, over the round's B=1 step."""
    from targets import lines
    res = {"samples_s": {"engine edge B=1 K=32": [40e-6, 50e-6], "sgemm_gflops": [200.0, 200.0]},
           "ratios": {"edge B=32 K=32 per-stream / B=1": [0.5, 0.6]},
           "bytes": {"edge B=1 K=32": 2.7e6, "paper B=1 K=32": 0},
           "flops": {"edge B=32 K=32": 32 * 3.2e6}}
    out = "\n".join(lines(res))
    # per round: 102.4e6 / 200e9 / 32 = 16 us per stream, over 40 and 50 us
    assert "at 100% of the round's 1-thread sgemm would be 0.36x [0.32-0.40]" in out
    res["flops"]["edge B=1 K=32"] = 3.2e6                 # 2.7 MB at 100 GB/s: 27 us; 3.2 MFLOP / 27 us / 200 GFLOP/s
    res["samples_s"]["bw_edge_gbs"] = [100.0, 100.0]
    assert "memory floor (its 2.70 MB read once at the round's rate) would be 59.3% [59.3-59.3]" in "\n".join(lines(res))
    del res["flops"]
    assert "bound:" not in "\n".join(lines(res))
