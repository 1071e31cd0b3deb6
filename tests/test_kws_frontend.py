"""Streaming log-mel frontend: equal to librosa's whole-clip features (center=False) and to itself
across chunk sizes; bad PCM rejected."""
import numpy as np
import pytest

from essm_stream.errors import ConfigError, ShapeError

librosa = pytest.importorskip("librosa")

from essm_stream.kws.frontend import LogMel, frontend_params, library_logmel, pcm_to_float  # noqa: E402


@pytest.fixture(scope="module")
def params():
    return frontend_params()


def _signal(n=16000 + 333, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) * (t < 0.5) + 0.05 * rng.standard_normal(n)).astype(np.float64)


def test_equals_librosa_whole_clip(params):
    y = _signal()
    ref = library_logmel(y)                               # librosa, center=False, float64
    fe = LogMel(params, normalize=False)
    n = (len(y) - 400) // 160 + 1
    frames = np.lib.stride_tricks.sliding_window_view(y, 400)[: n * 160: 160]
    got = fe.logmel_frames(frames)
    err = np.abs(got - ref)
    print(f"log-mel vs librosa float64: max {err.max():.2e} mean {err.mean():.2e} (tol 1e-9)")
    assert got.shape == ref.shape == (n, 40)
    assert err.max() < 1e-9
    # the streamed float32 output is the same up to float32 rounding
    out = fe.process(y)
    assert np.abs(out - ref).max() < 1e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("chunks", [[1], [159, 161], [160], [400], [1000, 7], [16000]])
def test_chunk_size_independent(params, chunks):
    y = _signal(seed=1)
    fe = LogMel(params, normalize=False)
    whole = fe.features(y)
    fe.reset()
    got, i, j = [], 0, 0
    while i < len(y):
        c = chunks[j % len(chunks)]
        got.append(fe.process(y[i:i + c]))
        i += c
        j += 1
    got = np.concatenate(got)
    assert got.shape == whole.shape
    assert np.array_equal(got, whole) or np.abs(got - whole).max() < 1e-6
    assert fe.frames == len(whole) and fe.samples == len(y)


def test_causal_frame_timing(params):
    fe = LogMel(params)
    assert len(fe.process(np.zeros(399, np.int16))) == 0        # a frame needs 400 samples
    assert len(fe.process(np.zeros(1, np.int16))) == 1
    assert len(fe.process(np.zeros(159, np.int16))) == 0
    assert len(fe.process(np.zeros(1, np.int16))) == 1
    assert fe.frame_end_time(0) == 400 / 16000


def test_int16_and_float_agree(params):
    q = np.round(_signal(seed=2) * 32767).astype(np.int16)
    fe = LogMel(params)
    a = fe.features(q)
    b = fe.features(q.astype(np.float32) / 32768.0)
    assert np.abs(a - b).max() < 1e-5


def test_bad_input(params):
    with pytest.raises(ShapeError, match="mono"):
        pcm_to_float(np.zeros((10, 2), np.float32))
    with pytest.raises(ShapeError, match="int16 or float"):
        pcm_to_float(np.zeros(10, np.int32))
    with pytest.raises(ShapeError, match="NaN"):
        pcm_to_float(np.array([0.0, np.nan]))
    with pytest.raises(ConfigError, match="logmel"):
        LogMel({"type": "mfcc"})


def test_stored_filterbank_is_librosas(params):
    fb = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40, fmin=20.0, fmax=8000.0, dtype=np.float64)
    assert np.array_equal(np.asarray(params["mel_basis"]), fb)
