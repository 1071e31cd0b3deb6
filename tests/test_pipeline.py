"""The whole path a user takes: train -> sweep -> compile -> run, through the CLI."""
import re

import numpy as np
import pytest

pytest.importorskip("torch")

from essm_stream.cli import main


def test_train_compile_run_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 40, 2)).astype(np.float32)
    X[:, :, 0] += rng.choice([-1.0, 1.0], size=(160, 1))
    y = (X[:, :, 0].mean(1) > 0).astype(np.int64)
    data = tmp_path / "d.npz"
    np.savez(data, X=X[:128], y=y[:128], X_test=X[128:], y_test=y[128:])
    run = tmp_path / "run"
    assert main(["train", "--task", "npz", "--data", str(data), "--steps", "40", "--batch-size", "32",
                 "--d-model", "8", "--layers", "1", "--d-gate", "8", "--lr", "1e-2", "--warmup", "5",
                 "--out", str(run), "--no-progress"]) == 0
    assert main(["sweep", str(run / "model.safetensors"), "--ks", "2,32", "--data", str(data),
                 "--json", str(tmp_path / "sweep.json")]) == 0
    capsys.readouterr()
    prog = tmp_path / "m.essm"
    assert main(["compile", str(run / "model.safetensors"), "-o", str(prog), "--verify", "50"]) == 0
    assert "engine == model" in capsys.readouterr().out
    test = tmp_path / "test.npz"
    np.savez(test, X=X[128:], y=y[128:])
    import json
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    for K in (2, 32):
        assert main(["run", str(prog), str(test), "-K", str(K), "--batch", "8", "--dtype", "float64",
                     "-o", str(tmp_path / f"y{K}.npy")]) == 0
        out = capsys.readouterr().out
        printed = float(re.search(r"accuracy ([\d.]+)%", out).group(1)) / 100
        Y = np.load(tmp_path / f"y{K}.npy")
        assert Y.shape == (32, 40, 2)
        # The streamed decision at the last step is the parallel model's decision at the last step.
        acc = float(np.mean(Y[:, -1].argmax(-1) == y[128:]))
        assert acc == sweep["acc"][sweep["K"].index(K)]
        assert printed == pytest.approx(acc, abs=1e-4)
    assert main(["run", str(prog), str(test), "--schedule", "32,1,4"]) == 0
    capsys.readouterr()
    assert main(["run", str(prog), str(test), "-K", "33"]) == 2
    assert "--K must be an int in [1, 32], got 33" in capsys.readouterr().err
