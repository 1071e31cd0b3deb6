"""Policies that map the pendulum's observation stream to commands, one tick at a time, torch-free.

Every policy has the same streaming interface, over a batch of n robots:

    pol.reset(n)                 # clear memory for n robots
    u = pol.act(obs, K)          # obs (n, 3) -> u (n,) in [-1, 1]; K an int or (n,) ints (ES-SSM only)

`ESSMPolicy` runs a compiled StreamProgram in the numba StreamEngine (budget K per robot).
The peers run in numpy from weights trained beside it (sims/imitation.py) and stored in one .npz:
`MLPPolicy` (memoryless when n_stack = 1, else an MLP on the last n_stack observations) and
`GRUPolicy` (PyTorch's GRU equations, step by step).
"""
from __future__ import annotations

import numpy as np

from essm_stream.errors import ConfigError


class ESSMPolicy:
    name = "ES-SSM"

    def __init__(self, program, n: int = 1, dtype=np.float32):
        from essm_stream.engine import StreamEngine
        if program.d_in != 3 or program.d_out != 1:
            raise ConfigError(f"a pendulum policy maps 3 observations to 1 command; this program is "
                              f"{program.d_in} -> {program.d_out}")
        self.program, self.dtype, self.k_max = program, dtype, program.k_max
        self.engine = StreamEngine(program, batch=n, dtype=dtype)
        self.n = n
        self._x = np.zeros((n, 3), dtype=dtype)

    def reset(self, n: int | None = None) -> None:
        from essm_stream.engine import StreamEngine
        if n is not None and n != self.n:
            self.engine = StreamEngine(self.program, batch=n, dtype=self.dtype)
            self.n, self._x = n, np.zeros((n, 3), dtype=self.dtype)
        self.engine.reset()

    def act(self, obs: np.ndarray, K=None) -> np.ndarray:
        self._x[:] = obs
        y = self.engine.step(self._x, self.k_max if K is None else K)
        return np.clip(y[:, 0].astype(np.float64), -1.0, 1.0)


def _relu(x):
    return np.maximum(x, 0.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class MLPPolicy:
    """u = W3 relu(W2 relu(W1 [o_{t-n+1} .. o_t] + b1) + b2) + b3 (zeros before the first tick)."""

    def __init__(self, weights: dict, n_stack: int, n: int = 1):
        self.W = [np.asarray(weights[f"W{i}"], np.float64) for i in (1, 2, 3)]
        self.b = [np.asarray(weights[f"b{i}"], np.float64) for i in (1, 2, 3)]
        if self.W[0].shape[1] != 3 * n_stack:
            raise ConfigError(f"MLP input width {self.W[0].shape[1]} != 3 x n_stack={n_stack}")
        self.n_stack = n_stack
        self.name = "MLP (last obs)" if n_stack == 1 else f"MLP (stack {n_stack})"
        self.reset(n)

    def reset(self, n: int | None = None) -> None:
        self.n = n or self.n
        self.hist = np.zeros((self.n, self.n_stack, 3))

    def act(self, obs: np.ndarray, K=None) -> np.ndarray:
        self.hist = np.roll(self.hist, -1, axis=1)
        self.hist[:, -1] = obs
        h = self.hist.reshape(self.n, -1)
        h = _relu(h @ self.W[0].T + self.b[0])
        h = _relu(h @ self.W[1].T + self.b[1])
        return np.clip((h @ self.W[2].T + self.b[2])[:, 0], -1.0, 1.0)


class GRUPolicy:
    """torch.nn.GRU (one layer) + linear head, step by step in numpy (gate order r, z, n)."""
    name = "GRU"

    def __init__(self, weights: dict, n: int = 1):
        g = {k: np.asarray(v, np.float64) for k, v in weights.items()}
        self.Wih, self.Whh, self.bih, self.bhh = g["W_ih"], g["W_hh"], g["b_ih"], g["b_hh"]
        self.Wo, self.bo = g["W_out"], g["b_out"]
        self.H = self.Whh.shape[1]
        self.reset(n)

    def reset(self, n: int | None = None) -> None:
        self.n = n or self.n
        self.h = np.zeros((self.n, self.H))

    def act(self, obs: np.ndarray, K=None) -> np.ndarray:
        H = self.H
        gi = obs @ self.Wih.T + self.bih
        gh = self.h @ self.Whh.T + self.bhh
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        c = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        self.h = (1 - z) * c + z * self.h
        return np.clip((self.h @ self.Wo.T + self.bo)[:, 0], -1.0, 1.0)


def load_peers(path: str, n: int = 1) -> dict:
    """{name: policy} from the peers .npz written by sims/imitation.py (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        w = {k: z[k] for k in z.files}
    out = {}
    for key in sorted({k.split(".")[0] for k in w}):
        sub = {k.split(".", 1)[1]: v for k, v in w.items() if k.startswith(key + ".")}
        if key.startswith("mlp"):
            p = MLPPolicy(sub, int(key[3:]), n)
        elif key == "gru":
            p = GRUPolicy(sub, n)
        else:
            raise ConfigError(f"unknown peer {key!r} in {path}")
        out[p.name] = p
    return out
