"""Tasks, budget-dropout training, checkpoints (atomic, pickle-free, resumable), DDP and sweeps."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from essm_stream.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from essm_stream.config import ESSMConfig
from essm_stream.errors import ConfigError, ProgramError
from essm_stream.model import ESSMModel
from essm_stream.sweep import smallest_k_retaining, summarize
from essm_stream.tasks import (LISTOPS_VOCAB, listops_eval, listops_tokens, load_npz, make_digits,
                               make_listops)
from essm_stream.train import TrainConfig, sample_budget, train

TINY = dict(d_model=8, n_layers=1, d_gate=8, seq_len=32)


def tiny_npz(tmp_path, n=96, T=32, per_step=False, seed=0):
    """A task a tiny model learns in a few dozen steps: the sign of the mean of the sequence."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, 2)).astype(np.float32)
    X[:, :, 0] += rng.choice([-1.0, 1.0], size=(n, 1))
    y = (X[:, :, 0].mean(1) > 0).astype(np.int64)
    if per_step:
        y = (np.cumsum(X[:, :, 0], 1) > 0).astype(np.int64)
    p = tmp_path / "data.npz"
    np.savez(p, X=X, y=y)
    return p


def test_listops_grammar_and_labels():
    tree = ("[SM", [3, ("[MAX", [1, 9, 2]), ("[MED", [4, 0, 7]), ("[MIN", [5, 6])])
    assert listops_eval(tree) == (3 + 9 + 4 + 5) % 10
    assert listops_tokens(("[MAX", [1, 2])) == ["[MAX", "1", "2", "]"]
    ds = make_listops(n_train=200, n_test=50, max_len=64, min_len=4, seed=1)
    assert ds.X_train.shape == (200, 64, len(LISTOPS_VOCAB)) and ds.n_classes == 10
    lengths = ds.X_train.sum(-1).sum(-1)
    assert lengths.min() >= 4 and lengths.max() <= 64
    # Left padding: every sequence ends with its closing bracket or a lone digit at the last step.
    assert np.all(ds.X_train[:, -1].sum(-1) == 1)
    assert len(np.unique(ds.y_train)) > 5  # all classes show up, not a degenerate generator
    again = make_listops(n_train=200, n_test=50, max_len=64, min_len=4, seed=1)
    assert np.array_equal(again.X_train, ds.X_train)
    with pytest.raises(ConfigError, match="min_len"):
        make_listops(max_len=3, min_len=8)


def test_digits_is_shipped_and_split():
    ds = make_digits()
    assert ds.X_train.shape[1:] == (64, 1) and len(ds.X_train) + len(ds.X_test) == 1797
    assert abs(float(ds.X_train.mean())) < 1e-4


def test_npz_loader_validates(tmp_path):
    p = tiny_npz(tmp_path)
    ds = load_npz(str(p))
    assert ds.d_in == 2 and ds.n_classes == 2 and len(ds.X_test) > 0
    bad = tmp_path / "bad.npz"
    np.savez(bad, X=np.zeros((4, 5)), y=np.zeros(4, np.int64))
    with pytest.raises(ConfigError, match=r"X must be a numeric \(N, T, d_in\)"):
        load_npz(str(bad))
    np.savez(bad, X=np.zeros((4, 5, 1)), y=np.zeros(4))
    with pytest.raises(ConfigError, match="integer labels"):
        load_npz(str(bad))


def test_budget_sampler_distributions():
    cfg = ESSMConfig(d_in=1, d_out=1, **TINY)
    tc = TrainConfig()
    ks = [sample_budget(np.random.default_rng(i), tc, cfg, 32) for i in range(3000)]
    counts = np.bincount(ks, minlength=33)[1:]
    assert counts.min() > 40 and counts.max() < 160  # uniform on 1..32: ~94 each
    base = ESSMConfig(d_in=1, d_out=1, variant="base", **TINY)
    assert sample_budget(np.random.default_rng(0), tc, base, 32) == 32
    sched = sample_budget(np.random.default_rng(3), TrainConfig(per_step_k=1.0), cfg, 32)
    assert isinstance(sched, torch.Tensor) and sched.shape == (32,) and len(set(sched.tolist())) > 1
    assert sample_budget(np.random.default_rng(0), TrainConfig(k_dist="fixed", k_train=5), cfg, 32) == 5
    with pytest.raises(ConfigError, match="k_dist"):
        TrainConfig(k_dist="normal")


def test_training_learns_and_checkpoint_round_trips(tmp_path):
    p = tiny_npz(tmp_path, n=256)
    tc = TrainConfig(task="npz", task_kwargs={"path": str(p)}, model=TINY, steps=60, batch_size=32,
                     lr=1e-2, warmup_steps=5, eval_every=60, out_dir=str(tmp_path / "run"), per_step_k=0.3)
    s = train(tc, progress=False)
    acc = s["history"][-1]["acc"][32]
    assert acc >= 0.8, f"a trivially separable task should be learned, got accuracy {acc}"
    model, meta = load_checkpoint(tmp_path / "run" / "model.safetensors")
    x = torch.from_numpy(np.load(p)["X"][:4])
    with torch.no_grad():
        assert torch.equal(model(x, 3), s["model"].eval()(x, 3))
    assert meta["train"]["task"] == "npz" and json.loads((tmp_path / "run" / "summary.json").read_text())
    # The file holds no pickle: it is safetensors with JSON metadata.
    raw = (tmp_path / "run" / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + header_len])["__metadata__"]["format"] == "essm-stream-checkpoint"


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    p = tiny_npz(tmp_path, n=128)
    common = dict(task="npz", task_kwargs={"path": str(p)}, model=TINY, batch_size=16, lr=5e-3,
                  warmup_steps=3, eval_every=10, ckpt_every=10, steps=20)
    full = train(TrainConfig(out_dir=str(tmp_path / "a"), **common), progress=False)["model"]
    _interrupt_after(TrainConfig(out_dir=str(tmp_path / "b"), **common), 10)
    _, meta = read_checkpoint(tmp_path / "b" / "last.safetensors")
    assert meta["train"]["step"] == 10 and not (tmp_path / "b" / "model.safetensors").exists()
    resumed = train(TrainConfig(out_dir=str(tmp_path / "b"), resume=True, **common), progress=False)
    assert [h["step"] for h in resumed["history"]] == [10, 20]
    for (n, x), (_, y) in zip(full.state_dict().items(), resumed["model"].state_dict().items()):
        assert torch.allclose(x, y, rtol=1e-5, atol=1e-6), f"{n} differs after resume"


def _interrupt_after(tc, n_steps):
    """Run tc but stop (as if killed) right after the checkpoint at step n_steps."""
    import essm_stream.train as tr

    class Stop(Exception):
        pass

    real = tr.save_checkpoint

    def save_then_stop(path, model, opt=None, sched=None, train_state=None):
        real(path, model, opt, sched, train_state)
        if opt is not None and train_state.get("step") == n_steps:
            raise Stop

    tr.save_checkpoint = save_then_stop
    try:
        with pytest.raises(Stop):
            train(tc, progress=False)
    finally:
        tr.save_checkpoint = real


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ProgramError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ProgramError, match="not a readable safetensors"):
        load_checkpoint(junk)
    model = ESSMModel(ESSMConfig(d_in=2, d_out=2, **TINY))
    good = tmp_path / "m.safetensors"
    save_checkpoint(good, model)
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ProgramError):
        load_checkpoint(tmp_path / "trunc.safetensors")
    with torch.no_grad():
        model.blocks[0].essm.M[0, 0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.safetensors", model)
    with pytest.raises(ProgramError, match="NaN"):
        load_checkpoint(tmp_path / "nan.safetensors")


def test_sweep_definitions():
    ks = [1, 2, 3, 4, 6, 8, 32]
    r = summarize(ks, [0.30, 0.80, 0.91, 0.97, 0.985, 0.99, 1.0])
    assert r["sweet_spot"] == 6 and r["collapse_boundary"] == 3
    # A dip at a larger K moves the sweet spot above it.
    assert smallest_k_retaining(ks, [0.5, 0.99, 0.99, 0.9, 0.99, 0.99, 1.0], 0.98) == 6


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_process_gloo_matches_single_process(tmp_path):
    """torchrun-style 2-process CPU run: gradients are averaged, so it matches one process on the
    same global batch."""
    p = tiny_npz(tmp_path, n=128)
    args = ["train", "--task", "npz", "--data", str(p), "--steps", "6", "--batch-size", "16",
            "--d-model", "8", "--layers", "1", "--d-gate", "8", "--lr", "1e-2", "--eval-every", "6",
            "--no-progress", "--device", "cpu"]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "essm_stream", *args, "--out", str(tmp_path / "ddp")],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    outs = [pr.communicate(timeout=240)[0].decode() for pr in procs]
    assert all(pr.returncode == 0 for pr in procs), outs
    single = subprocess.run([sys.executable, "-m", "essm_stream", *args, "--out", str(tmp_path / "one")],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=240)
    assert single.returncode == 0, single.stderr.decode()
    a, _ = load_checkpoint(tmp_path / "ddp" / "model.safetensors")
    b, _ = load_checkpoint(tmp_path / "one" / "model.safetensors")
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5), f"{n}: DDP and single-process training differ"


def test_warmup_cosine_follows_steps_or_time_budget_whichever_ends_first():
    import torch

    from essm_stream.train import warmup_cosine
    lrs = []
    for clock in (None, {"frac": 0.0}, {"frac": 1.0}):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = warmup_cosine(opt, 2, 10, clock)
        for _ in range(3):     # warm-up (2 steps), then the first decay step
            opt.step()
            sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == lrs[1] > 0.9           # clock at 0: the step schedule (cos of 1/8 of the way)
    assert abs(lrs[2] - 0.05) < 1e-12       # time budget spent: fully annealed whatever the step


def test_non_finite_loss_skips_the_update_and_persistent_ones_stop_training(tmp_path, monkeypatch):
    """bf16 autocast has no GradScaler: a NaN loss must not reach the weights. Every step's loss is made
    NaN after a good first leg; the updates are skipped, the checkpoint keeps the first leg's weights,
    and MAX_NONFINITE_STEPS in a row stop training with an error."""
    import essm_stream.train as tr
    from essm_stream.errors import NonFiniteInputError

    p = tiny_npz(tmp_path, n=64)
    common = dict(task="npz", task_kwargs={"path": str(p)}, model=TINY, batch_size=16, lr=5e-3, warmup_steps=2,
                  eval_every=100, ckpt_every=4, out_dir=str(tmp_path / "run"))
    train(TrainConfig(steps=4, **common), progress=False)
    good = {k: v.clone() for k, v in read_checkpoint(tmp_path / "run" / "last.safetensors")[0].items()}
    real = tr.task_loss
    monkeypatch.setattr(tr, "task_loss", lambda out, y: real(out, y) * float("nan"))
    monkeypatch.setattr(tr, "MAX_NONFINITE_STEPS", 6)
    with pytest.raises(NonFiniteInputError, match="6 steps in a row"):
        train(TrainConfig(steps=40, resume=True, **common), progress=False)
    tensors, meta = read_checkpoint(tmp_path / "run" / "last.safetensors")
    assert meta["train"]["step"] == 8                      # steps 5-8 skipped, then checkpointed
    for k, v in good.items():
        if k.startswith("model."):
            assert torch.equal(tensors[k], v), k
