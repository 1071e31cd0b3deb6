"""Long (stream-format) training clips: the target ends in the last second, the context before it
never reaches into that second, features have the model's stacked shape (no espeak-ng needed)."""
import json

import numpy as np

from essm_stream.kws import data as D
from essm_stream.kws.frontend import frontend_params
from essm_stream.kws.longclips import (
    make_long_clip,
    make_long_features,
    n_samples_steps,
)


def _utt(label, n, f):
    t = np.arange(n) / D.SR
    return D.Utterance(label, D.LABELS[label], "test", (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32))


def _utts():
    kws = [_utt(i, 8000, 300 + 40 * i) for i in range(len(D.KEYWORDS))]
    others = [_utt(D.UNKNOWN, 6000 + 2000 * i, 900 + 50 * i) for i in range(4)]
    return kws, others


def test_target_in_last_second_context_before_it(monkeypatch):
    kws, others = _utts()
    n, window, gap = n_samples_steps(192), D.SR, int(0.1 * D.SR)
    assert (n - 400) // 160 + 1 == 384                    # 384 frames = 192 steps of two stacked frames
    monkeypatch.setattr(D, "background", lambda m, rng, pool=None: np.zeros(m))   # speech only
    for seed in range(30):
        # context only (silence target): nothing inside the last second + gap
        x = make_long_clip(None, n, np.random.default_rng(seed), kws, others, [], window, p_empty=0.0)
        assert x.shape == (n,) and x.dtype == np.float32 and np.isfinite(x).all()
        assert not np.any(x[n - window - gap:]), seed
        # target only: nothing before the last second, and it ends inside it
        x = make_long_clip(kws[seed % 10], n, np.random.default_rng(seed), kws, others, [], window, p_empty=1.0)
        nz = np.nonzero(x)[0]
        assert nz[0] >= n - window and nz[-1] < n, seed
        # both: the context reaches at most to the last second minus the gap
        x = make_long_clip(kws[0], n, np.random.default_rng(seed), kws, others, [], window, p_empty=0.0)
        assert np.any(x[n - window:])


def test_long_features_shape_and_labels(tmp_path):
    kws, others = _utts()
    utts = kws + others
    D.save_utterances(tmp_path / "u.npz", utts)
    params = frontend_params(mean=np.zeros(40), std=np.ones(40))
    params = json.loads(json.dumps(params))
    X, y = make_long_features(tmp_path / "u.npz", params, 12, 150, seed=(0, 1), workers=1, chunk=5)
    assert X.shape == (12, 150, 80) and X.dtype == np.float32 and np.isfinite(X).all()
    assert y.shape == (12,) and y.min() >= 0 and y.max() < len(D.LABELS)
    X2, y2 = make_long_features(tmp_path / "u.npz", params, 12, 150, seed=(0, 1), workers=2, chunk=5)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(X, X2)                    # seeded per chunk: same whatever the workers
