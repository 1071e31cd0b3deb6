"""Long training clips in the stream's format (torch-free): context, then the word, label at the end.

The 64-step clips of `build.py` start from zero state, so the second layer never sees real history
in training while in a stream it always does. A long clip is T = 3L steps (3.85 s at 20 ms steps):
a context of other speech (keywords and non-keyword words/phrases, 40% reverberant, levels
-8..0 dB as in `compose_stream`), gaps and background, then the target in the clip's last second
(a keyword, a non-keyword word or phrase: `unknown`, or nothing: `silence`). Every context
utterance ends at least `gap_s[0]` before the last second starts, so a keyword in the context
is never inside the span a stream detection would be scored against. The label is read at the
clip's last step, as the stream reads it at every hop; the pooled head (W = 1 s) and both layers
(2 x 64 steps) see real history there.

Hard negatives are weighted up: `unknown` is 30% of the clips (keyword-like words such as *yet,
note, top, lift, goat, upper* and filler phrases), and 35% of the contexts carry a keyword that
must *not* be reported at the end (the posterior has to fall after a word is over).
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from . import data as D
from .frontend import LogMel

LONG_CLASS_P = np.array([0.058] * 10 + [0.30, 0.12])        # keywords, unknown (hard negatives), silence


def n_samples_steps(steps: int, stack: int = 2) -> int:
    return 400 + (steps * stack - 1) * 160


def _scaled(u: np.ndarray, rng) -> np.ndarray:
    sp = u.astype(np.float64)
    if rng.random() < 0.4:
        sp = D.reverb(sp, rng)
    return sp / (np.abs(sp).max() + 1e-12) * 10 ** (rng.uniform(-8, 0) / 20)


def make_long_clip(target: D.Utterance | None, n: int, rng: np.random.Generator, kws, others, pool,
                   window: int, gap_s=(0.1, 1.5), p_kw_context: float = 0.35, p_empty: float = 0.15) -> np.ndarray:
    """float32 (n,): context speech + the target ending in the last `window` samples + background."""
    sp = np.zeros(n)
    if target is not None:
        t = _scaled(target.audio, rng)[:window]
        lo, hi = n - window, n - len(t) - int(0.03 * D.SR)
        s0 = int(rng.integers(lo, max(lo, hi) + 1))
        m = min(len(t), n - s0)
        sp[s0:s0 + m] = t[:m]
    ce = n - window - int(gap_s[0] * D.SR)                  # context ends before this sample
    if rng.random() >= p_empty:
        pos = int(rng.uniform(0, 0.8) * D.SR)
        while True:
            kw = rng.random() < p_kw_context
            pick = kws if kw else others
            u = _scaled(pick[int(rng.integers(len(pick)))].audio, rng)
            if pos + len(u) > ce:
                break
            sp[pos:pos + len(u)] += u
            pos += len(u) + int(rng.uniform(*gap_s) * D.SR)
    active = np.abs(sp) > 1e-4
    rms_s = np.sqrt(np.mean(sp[active] ** 2)) if active.any() else 0.05
    bg = D.background(n, rng, pool)
    snr = 80.0 if rng.random() < 0.1 else rng.uniform(0, 30)
    if not active.any():                                     # silence only: background at any level
        x = bg * 10 ** (rng.uniform(-70, -15) / 20)
        return x.astype(np.float32)
    x = sp + bg * rms_s * 10 ** (-snr / 20)
    x *= 10 ** (rng.uniform(-30, -3) / 20) / (np.abs(x).max() + 1e-12)
    return x.astype(np.float32)


_G = {}


def _init(utts_path, params):
    utts = D.load_utterances(utts_path)
    _G["by"] = {l: [u for u in utts if u.label == l] for l in range(len(D.LABELS))}
    _G["kws"] = [u for u in utts if u.label < len(D.KEYWORDS)]
    _G["others"] = _G["by"][D.UNKNOWN]
    _G["pool"] = [u.audio for u in _G["others"]]
    _G["fe"] = LogMel(params, normalize=True)


def _chunk(args):
    seed, labels, n, window, stack = args
    rng = np.random.default_rng(seed)
    fe, by = _G["fe"], _G["by"]
    out = []
    for l in labels:
        l = int(l)
        tgt = None if l == D.SILENCE else by[l][int(rng.integers(len(by[l])))]
        x = make_long_clip(tgt, n, rng, _G["kws"], _G["others"], _G["pool"], window)
        F = fe.features(x)
        out.append(F.reshape(F.shape[0] // stack, stack * F.shape[1]))
    return np.stack(out)


def make_long_features(utts_path, params: dict, n_clips: int, steps: int, seed, stack: int = 2,
                       workers: int = 2, chunk: int = 250, window_s: float = 1.0):
    """(X (N, steps, stack*n_mels) normalised features, y (N,)) of long clips, in `workers` processes."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(D.LABELS), size=n_clips, p=LONG_CLASS_P / LONG_CLASS_P.sum())
    n = n_samples_steps(steps, stack)
    jobs = [((*np.atleast_1d(seed), 100 + i), y[i * chunk:(i + 1) * chunk], n, int(window_s * D.SR), stack)
            for i in range((n_clips + chunk - 1) // chunk)]
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(str(utts_path), params)) as ex:
        X = np.concatenate(list(ex.map(_chunk, jobs)))
    return X.astype(np.float32), y.astype(np.int64)


def build_long(data_dir, n_train: int = 10000, n_test: int = 1200, steps: int = 192, seed: int = 0,
               workers: int = 2) -> Path:
    """Write `long.npz` (X_train, y_train from training voices, X_test, y_test from unseen voices)."""
    data_dir = Path(data_dir)
    params = json.loads((data_dir / "frontend.json").read_text())
    Xtr, ytr = make_long_features(data_dir / "utts_train.npz", params, n_train, steps, (seed, 30), workers=workers)
    Xte, yte = make_long_features(data_dir / "utts_test.npz", params, n_test, steps, (seed, 31), workers=workers)
    out = data_dir / "long.npz"
    tmp = data_dir / f".long.{os.getpid()}.npz"
    np.savez(tmp, X_train=Xtr, y_train=ytr, X_test=Xte, y_test=yte, steps=np.int64(steps))
    tmp.replace(out)
    return out


def build_extra(data_dir, n_train: int, seed: int, steps: int = 192, workers: int = 2) -> Path:
    """`long_extra{seed}.npz`: more training-voice long clips from another seed (train_long reads them all)."""
    data_dir = Path(data_dir)
    params = json.loads((data_dir / "frontend.json").read_text())
    X, y = make_long_features(data_dir / "utts_train.npz", params, n_train, steps, (seed, 30), workers=workers)
    out = data_dir / f"long_extra{seed}.npz"
    tmp = data_dir / f".long_extra.{os.getpid()}.npz"
    np.savez(tmp, X_train=X, y_train=y, steps=np.int64(steps))
    tmp.replace(out)
    return out


if __name__ == "__main__":
    import sys
    import time
    t0 = time.perf_counter()
    d = sys.argv[1] if len(sys.argv) > 1 else "runs/kws/data"
    if len(sys.argv) > 2:                       # python -m essm_stream.kws.longclips DATA EXTRA_SEED [N]
        print(build_extra(d, int(sys.argv[3]) if len(sys.argv) > 3 else 10000, int(sys.argv[2])))
    else:
        print(build_long(d, n_train=int(os.environ.get("KWS_LONG_N", "10000"))))
    print(f"{time.perf_counter() - t0:.0f} s")
