"""The training path on a CUDA device: forward against the float64 reference, bf16 autocast, the
classification trainer and the keyword stream trainer with AMP. Skipped without a GPU (CI has
none); run on a GPU machine with `python -m pytest tests/test_cuda.py`."""
import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from essm_stream.config import ESSMConfig  # noqa: E402
from essm_stream.model import ESSMModel  # noqa: E402
from essm_stream.reference import model_ref  # noqa: E402

CFG = ESSMConfig(d_in=6, d_out=5, d_model=16, n_layers=2, seq_len=32, k_max=32, d_gate=16, head="step")


def _model_and_input(T=48, seed=0):
    torch.manual_seed(seed)
    model = ESSMModel(CFG).eval()
    x = np.random.default_rng(seed).normal(size=(3, T, CFG.d_in)).astype(np.float32)
    return model, x


@pytest.mark.parametrize("K", [1, 4, 17, 32])
def test_cuda_fp32_forward_matches_float64_reference(K):
    """fp32 on the GPU vs the numpy float64 reference, every budget; T=48 runs the Toeplitz
    convolution, T=300 the FFT one. Tolerance 2e-4 absolute on outputs of order 1 (fp32 with the
    GPU's reduction order; TF32 is off by default for matmuls)."""
    for T in (48, 300):
        model, x = _model_and_input(T)
        w = model.export_weights()
        with torch.no_grad():
            y = model.to("cuda")(torch.from_numpy(x).cuda(), K).cpu().numpy()
        ref = np.stack([model_ref(x[b].astype(np.float64), w, CFG, K) for b in range(len(x))])
        assert np.abs(y - ref).max() < 2e-4, f"K={K} T={T}: {np.abs(y - ref).max()}"


def test_cuda_bf16_autocast_forward_is_close_to_fp32():
    model, x = _model_and_input(64)
    model = model.cuda()
    xt = torch.from_numpy(x).cuda()
    with torch.no_grad():
        y32 = model(xt, 8).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y16 = model(xt, 8).float()
    rel = ((y16 - y32).norm() / y32.norm()).item()
    assert torch.isfinite(y16).all() and rel < 3e-2, rel


def test_cuda_amp_classifier_training_learns_and_loads_on_cpu(tmp_path):
    from essm_stream.checkpoint import load_checkpoint
    from essm_stream.train import TrainConfig, train

    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 32, 2)).astype(np.float32)
    X[:, :, 0] += rng.choice([-1.0, 1.0], size=(256, 1))
    np.savez(tmp_path / "data.npz", X=X, y=(X[:, :, 0].mean(1) > 0).astype(np.int64))
    tc = TrainConfig(task="npz", task_kwargs={"path": str(tmp_path / "data.npz")},
                     model=dict(d_model=8, n_layers=1, d_gate=8, seq_len=32), steps=80, batch_size=32, lr=1e-2,
                     warmup_steps=5, eval_every=80, out_dir=str(tmp_path / "run"), device="cuda", amp=True)
    s = train(tc, progress=False)
    assert s["history"][-1]["acc"][32] >= 0.8
    model, _ = load_checkpoint(tmp_path / "run" / "model.safetensors")      # on the CPU
    xt = torch.from_numpy(X[:8])
    with torch.no_grad():
        a = model(xt, 4)
        b = s["model"].float().cpu().eval()(xt, 4)
    assert torch.allclose(a, b, atol=1e-6)


def test_cuda_amp_stream_training_runs_and_checkpoints(tmp_path):
    from essm_stream.checkpoint import load_checkpoint
    from kws_sets import write_training_streams

    from essm_stream.kws import streamtrain as S
    from essm_stream.kws import voices as V

    fold = V.fold("festival")
    write_training_streams(tmp_path / "feats" / "embedding", (fold["train"][0], fold["train"][1], fold["val"][0]),
                           T=400, kw=[(0, 50, 55), (3, 120, 126), (5, 300, 304)], signature=3.0)
    sc = S.StreamTrainConfig(test_family="festival", d_model=16, d_gate=16, k_max=8, seq_len=16, crop=32,
                             batch_size=64, steps=60, warmup_steps=5, eval_every=30, mine_every=20, ckpt_every=30,
                             keep_every=30, device="cuda", amp=1, budget_clock="wall", aug_noise=0.1)
    res = S.train_fold(tmp_path / "feats", tmp_path / "m", sc)
    assert res["device"].startswith("cuda") and res["amp"] in ("torch.bfloat16", "torch.float16")
    assert res["steps_done"] == 60
    losses = [h["loss"] for h in res["history"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    model, meta = load_checkpoint(tmp_path / "m" / "step_60.safetensors")
    assert meta["train"]["step"] == 60
    assert json.loads((tmp_path / "m" / "train.json").read_text())["steps_done"] == 60
    if importlib.util.find_spec("openwakeword") is not None:    # the embedding frontend's files come from its wheel
        S.build_fold_program(tmp_path / "m")                     # compiles on the CPU from a GPU-trained checkpoint
        assert (tmp_path / "m" / "kws.essm").is_file()
