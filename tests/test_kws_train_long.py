"""Long-clip training loop: runs on tiny fake data, checkpoints, resumes where it stopped."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from essm_stream.kws import data as D
from essm_stream.kws.frontend import frontend_params
from essm_stream.kws.train import LongTrainConfig, train_long


def _fake_data(d):
    rng = np.random.default_rng(0)
    C = len(D.LABELS)
    np.savez(d / "features.npz", X_train=rng.standard_normal((16, 128, 40)).astype(np.float32),
             y_train=rng.integers(0, C, 16), X_test=rng.standard_normal((8, 128, 40)).astype(np.float32),
             y_test=rng.integers(0, C, 8))
    np.savez(d / "long.npz", X_train=rng.standard_normal((16, 160, 80)).astype(np.float32),
             y_train=rng.integers(0, C, 16), X_test=rng.standard_normal((8, 160, 80)).astype(np.float32),
             y_test=rng.integers(0, C, 8))
    (d / "frontend.json").write_text(json.dumps(frontend_params(mean=np.zeros(40), std=np.ones(40))))


def test_train_long_runs_and_resumes(tmp_path):
    _fake_data(tmp_path)
    lc = LongTrainConfig(init="", d_model=8, steps=3, batch_size=4, eval_every=3, ckpt_every=1,
                         log_every=1, min_steps=128)
    r = train_long(tmp_path, tmp_path / "out", lc)
    assert r["steps_done"] == 3 and r["model"].cfg.seq_len == 64 and r["model"].cfg.d_in == 80
    assert (tmp_path / "out" / "last.safetensors").is_file()
    assert r["history"][-1]["step"] == 3
    lc5 = LongTrainConfig(init="", d_model=8, steps=5, batch_size=4, eval_every=5, ckpt_every=1, log_every=1)
    r2 = train_long(tmp_path, tmp_path / "out", lc5)              # resumes at step 3
    assert r2["steps_done"] == 5 and [h["step"] for h in r2["history"]] == [3, 5]
