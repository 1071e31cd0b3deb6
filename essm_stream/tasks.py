"""Sequence tasks the project generates itself (no downloads) and a loader for a user's own data.

Every task is a `SequenceDataset`: inputs X (N, T, d_in) float32 and labels y. Classification
labels are (N,) ints read at the LAST step of the (causal) model, so a stream reports the same
decision at that step; per-step targets are (N, T) ints. Variable-length sequences are left-padded
with an all-zero frame so that every sequence ends at step T.

- listops: the ListOps grammar of Long Range Arena (Nangia & Bowman 2018; Tay et al. 2021):
  nested MAX / MIN / MED / SM (sum mod 10) over digits, 10 classes, one-hot tokens.
- digits: sequential image classification of scikit-learn's bundled 8x8 digits, pixel by pixel
  (T = 64, d_in = 1), optionally with a fixed pixel permutation (harder: no locality).
- npz: a user's own `.npz` with `X` (N, T, d_in) and `y` (N,) or (N, T).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

log = logging.getLogger(__name__)

TASKS = ("listops", "digits", "npz")


@dataclass
class SequenceDataset:
    X_train: np.ndarray      # (N, T, d_in) float32
    y_train: np.ndarray      # (N,) or (N, T) int64
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    name: str

    @property
    def d_in(self) -> int:
        return int(self.X_train.shape[-1])

    @property
    def seq_len(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def per_step(self) -> bool:
        return self.y_train.ndim == 2


# ----------------------------------------------------------------------------- ListOps
LISTOPS_OPS = ("[MAX", "[MIN", "[MED", "[SM")
LISTOPS_VOCAB = ["<pad>"] + [str(i) for i in range(10)] + list(LISTOPS_OPS) + ["]"]
_TOK = {t: i for i, t in enumerate(LISTOPS_VOCAB)}


def _listops_tree(rng: np.random.Generator, depth: int, max_depth: int, max_args: int):
    # Deeper nodes become leaves more often, which keeps lengths in the range LRA uses per depth.
    if depth >= max_depth or (depth > 0 and rng.random() < 0.25 + 0.1 * depth):
        return int(rng.integers(10))
    op = LISTOPS_OPS[int(rng.integers(len(LISTOPS_OPS)))]
    n = int(rng.integers(2, max_args + 1))
    return (op, [_listops_tree(rng, depth + 1, max_depth, max_args) for _ in range(n)])


def listops_eval(tree) -> int:
    if isinstance(tree, int):
        return tree
    op, args = tree
    v = [listops_eval(a) for a in args]
    if op == "[MAX":
        return max(v)
    if op == "[MIN":
        return min(v)
    if op == "[MED":
        return int(np.median(v))  # LRA's MED: the (floored) median
    return sum(v) % 10


def listops_tokens(tree) -> list[str]:
    if isinstance(tree, int):
        return [str(tree)]
    op, args = tree
    out = [op]
    for a in args:
        out += listops_tokens(a)
    return out + ["]"]


def make_listops(n_train=8000, n_test=1000, max_len=128, min_len=8, max_depth=5, max_args=5,
                 seed=0) -> SequenceDataset:
    """Generate ListOps expressions of min_len..max_len tokens, left-padded to max_len, one-hot."""
    if max_len < min_len or min_len < 1:
        raise ConfigError(f"listops needs 1 <= min_len <= max_len, got min_len={min_len} max_len={max_len}")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    X = np.zeros((n, max_len, len(LISTOPS_VOCAB)), np.float32)
    y = np.zeros(n, np.int64)
    i = tries = 0
    while i < n:
        tries += 1
        if tries > 200 * n:
            raise ConfigError(f"could not generate ListOps expressions of length {min_len}..{max_len}; "
                              "raise max_len or max_depth")
        tree = _listops_tree(rng, 0, max_depth, max_args)
        toks = listops_tokens(tree)
        if not min_len <= len(toks) <= max_len:
            continue
        ids = [_TOK[t] for t in toks]
        X[i, max_len - len(ids) + np.arange(len(ids)), ids] = 1.0
        y[i] = listops_eval(tree)
        i += 1
    return SequenceDataset(X[:n_train], y[:n_train], X[n_train:], y[n_train:], 10, "listops")


# ----------------------------------------------------------------------------- digits
def make_digits(permute: bool = False, test_fraction: float = 0.2, seed: int = 0) -> SequenceDataset:
    """scikit-learn's 1797 8x8 digits as 64-step pixel sequences, values scaled to [0, 1]."""
    from sklearn.datasets import load_digits  # ships inside scikit-learn, no download

    d = load_digits()
    X = (d.data.astype(np.float32) / 16.0)[:, :, None]          # (N, 64, 1)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    if permute:
        X = X[:, rng.permutation(64)]
    order = rng.permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = order[:n_test], order[n_test:]
    # Standardise with train statistics only.
    mu, sd = X[tr].mean(), X[tr].std()
    X = (X - mu) / sd
    return SequenceDataset(X[tr], y[tr], X[te], y[te], 10, "digits_perm" if permute else "digits")


# ----------------------------------------------------------------------------- npz
def load_npz(path: str, test_fraction: float = 0.2, seed: int = 0) -> SequenceDataset:
    """A user's sequences: `X` (N, T, d_in) float, `y` (N,) or (N, T) int; optional X_test / y_test."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path!r} as an .npz of arrays: {e}") from None
    if "X" not in z or "y" not in z:
        raise ConfigError(f"{path!r} must hold arrays 'X' (N, T, d_in) and 'y' (N,) or (N, T); found {sorted(z.files)}")
    X, y = z["X"], z["y"]
    if X.ndim != 3 or not np.issubdtype(X.dtype, np.number):
        raise ConfigError(f"{path!r}: X must be a numeric (N, T, d_in) array, got shape {X.shape} dtype {X.dtype}")
    if not np.issubdtype(y.dtype, np.integer) or y.shape not in ((X.shape[0],), X.shape[:2]):
        raise ConfigError(f"{path!r}: y must be integer labels of shape (N,) or (N, T) = {X.shape[:2]}, "
                          f"got shape {y.shape} dtype {y.dtype}")
    if not np.all(np.isfinite(X)):
        raise ConfigError(f"{path!r}: X holds NaN or Inf")
    if y.min() < 0:
        raise ConfigError(f"{path!r}: labels must be >= 0, found {y.min()}")
    n_classes = int(y.max()) + 1
    if "X_test" in z and "y_test" in z:
        return SequenceDataset(X.astype(np.float32), y.astype(np.int64), z["X_test"].astype(np.float32),
                               z["y_test"].astype(np.int64), max(n_classes, int(z["y_test"].max()) + 1), "npz")
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = max(1, int(round(test_fraction * len(X))))
    te, tr = order[:n_test], order[n_test:]
    return SequenceDataset(X[tr].astype(np.float32), y[tr].astype(np.int64), X[te].astype(np.float32),
                           y[te].astype(np.int64), n_classes, "npz")


def make_task(name: str, seed: int = 0, **kw) -> SequenceDataset:
    """Build a task by name; keyword arguments are the generator's own (e.g. max_len for listops)."""
    if name == "listops":
        return make_listops(seed=seed, **kw)
    if name in ("digits", "digits_perm"):
        return make_digits(permute=(name == "digits_perm") or kw.pop("permute", False), seed=seed, **kw)
    if name == "npz":
        if "path" not in kw:
            raise ConfigError("task 'npz' needs a path: --data FILE.npz")
        return load_npz(kw.pop("path"), seed=seed, **kw)
    raise ConfigError(f"unknown task {name!r}; choose one of listops, digits, digits_perm, npz")
