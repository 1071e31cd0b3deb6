"""Synthetic keyword set files in the format `kws.loso.load_set` reads (features already computed), for
the evaluation tests: one embedding row every 80 ms from 0.78 s, as the speech-embedding frontend
stamps them, silent PCM of the stated length."""
from __future__ import annotations

import json

import numpy as np


def write_feature_set(path, F, *, events=(), meta=None, seconds=None, levels=None) -> None:
    """Store features F (steps, 96) with keyword `events` (kws.data.Event) and `meta` (JSON-able)."""
    steps = len(F)
    t = 0.78 + 0.08 * np.arange(steps)
    seconds = t[-1] + 0.1 if seconds is None else seconds
    np.savez(path, pcm=np.zeros(int(seconds * 16000), np.int16), F=np.asarray(F, np.float32),
             levels=np.zeros(steps) if levels is None else np.asarray(levels, float), times=t,
             events=np.array(json.dumps([[e.label, e.start_s, e.end_s] for e in events])),
             meta=np.array(json.dumps({"snr_db": None} if meta is None else meta)))


def write_training_streams(feats_dir, voices, *, T=200, kw=((0, 50, 55), (3, 120, 126)), signature=0.0, seed=0):
    """One rendered training stream per voice in render.py's features format (X (T, 96) float16, y, kw,
    lens, voice) under feats_dir/<family>_<voice>.npz; y is unknown / silence, and each keyword's span gets
    its label and, with signature > 0, that much added to feature `class` (something a model can learn)."""
    from pathlib import Path

    from essm_stream.kws import data as D

    rng = np.random.default_rng(seed)
    Path(feats_dir).mkdir(parents=True, exist_ok=True)
    kw = np.asarray(kw)
    for v in voices:
        y = rng.choice([D.UNKNOWN, D.SILENCE], T).astype(np.int8)
        X = rng.normal(size=(T, 96))
        if signature:
            for c, a, z in kw:
                y[a:z + 1] = c
                X[a:z + 1, c] += signature
        np.savez(Path(feats_dir) / f"{v.replace(':', '_', 1)}.npz", X=X.astype(np.float16), y=y, kw=kw,
                 lens=np.array([T]), voice=np.array(v))
