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
