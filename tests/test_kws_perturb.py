"""Speaker perturbations (kws/perturb.py) held to properties that fail if the wrong thing moves:
a tempo change keeps the pitch and changes the duration; a pitch shift moves the pitch and keeps the
formant; a formant warp moves the formant and keeps the pitch."""
import numpy as np
import pytest
from scipy.signal import lfilter

from essm_stream.errors import ConfigError
from essm_stream.kws import perturb as P

SR = 16000


def vowel(f0=120.0, formants=((600, 80), (1800, 120), (2800, 160)), seconds=1.0):
    n = int(seconds * SR)
    x = np.zeros(n)
    x[(np.arange(0, seconds, 1 / f0) * SR).astype(int)] = 1.0
    for f, bw in formants:                       # cascade of 2-pole resonators
        r = np.exp(-np.pi * bw / SR)
        x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r], x)
    return x / np.abs(x).max()


def f0_of(x):
    """Fundamental from the autocorrelation peak (60-400 Hz lags) of the middle half."""
    m = x[len(x) // 4: 3 * len(x) // 4]
    m = m - m.mean()
    ac = np.correlate(m, m, "full")[len(m) - 1:]
    lo, hi = SR // 400, SR // 60
    lag = lo + int(np.argmax(ac[lo:hi]))
    return SR / lag


def f1_of(x):
    """First formant: the peak of the frame-averaged cepstral envelope in 300-1000 Hz."""
    E = P.log_envelope(P._stft(x)).mean(1)
    f = np.fft.rfftfreq(P.N_FFT, 1 / SR)
    band = (f >= 300) & (f <= 1000)
    return f[band][np.argmax(E[band])]


def test_reference_vowel_is_what_the_checks_read():
    x = vowel()
    assert f0_of(x) == pytest.approx(120, rel=0.02)
    assert f1_of(x) == pytest.approx(600, rel=0.08)       # 31 Hz bins


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_time_stretch_keeps_pitch_and_scales_duration(rate):
    x = vowel()
    y = P.time_stretch(x, rate)
    assert len(y) / len(x) == pytest.approx(1 / rate, rel=0.01)
    assert f0_of(y) == pytest.approx(120, rel=0.03)


@pytest.mark.parametrize("semi", [-4.0, 5.0])
def test_pitch_shift_moves_pitch_keeps_formant(semi):
    x = vowel()
    y = P.pitch_shift(x, semi)
    assert len(y) == len(x)
    assert f0_of(y) == pytest.approx(120 * 2 ** (semi / 12), rel=0.04)
    # a plain resampling pitch shift would move F1 by the same factor (>= 26% for 4-5 semitones)
    assert f1_of(y) == pytest.approx(f1_of(x), rel=0.08)


@pytest.mark.parametrize("alpha", [0.85, 1.2])
def test_formant_warp_moves_formant_keeps_pitch(alpha):
    x = vowel()
    y = P.formant_warp(x, alpha)
    assert len(y) == len(x)
    assert f0_of(y) == pytest.approx(120, rel=0.03)
    assert f1_of(y) == pytest.approx(alpha * f1_of(x), rel=0.08)


def test_random_speaker_scales_time_consistently_and_is_seeded():
    x = vowel(seconds=0.8)
    a, da = P.random_speaker(x, np.random.default_rng(3))
    b, db = P.random_speaker(x, np.random.default_rng(3))
    assert da == db and np.array_equal(a, b)
    r = da.get("tempo", 1.0)
    assert len(a) / len(x) == pytest.approx(1 / r, rel=0.01)
    assert np.all(np.isfinite(a))


def test_bad_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="rate"):
        P.time_stretch(vowel(), 10.0)
    with pytest.raises(ConfigError, match="semitones"):
        P.pitch_shift(vowel(), 30)
    with pytest.raises(ConfigError, match="1-D"):
        P.formant_warp(np.zeros((2, 100)), 1.1)
    with pytest.raises(ConfigError, match="NaN"):
        P.formant_warp(np.full(1000, np.nan), 1.1)
