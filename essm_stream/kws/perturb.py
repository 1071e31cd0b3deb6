"""Speaker perturbations that change one property of a voice at a time (issue 9 item 2; torch-free).

`render.perturb_speaker` resamples an utterance (pitch, formants and tempo move together, a
vocal-tract-length change). A user's voice differs from a synthesizer's in each of them separately, so
these change one at a time:

- `time_stretch(x, rate)`: tempo without pitch (librosa's phase vocoder); the duration becomes
  len(x) / rate, the fundamental stays;
- `pitch_shift(x, semitones)`: pitch without formants: librosa's pitch shift (resampling + phase
  vocoder: pitch and formants move together), then each STFT frame's spectral envelope is put back to
  the original's (envelope swap), so the harmonics move under a fixed vocal tract;
- `formant_warp(x, alpha)`: formants without pitch: each STFT frame's spectral envelope is warped along
  frequency, E'(f) = E(f / alpha) (alpha > 1: a shorter vocal tract, female-like), the harmonic fine
  structure (the pitch) stays;
- `random_speaker(x, rng)`: a random draw of the three (and of the old resampling), wide enough to move a
  male voice to a female-like one (pitch up to +7 semitones with formants x 1.2) and back.

The spectral envelope is the cepstrally smoothed log magnitude (the first `n_cep` quefrency bins,
1.5 ms at 16 kHz: below the pitch period of any voice under 600 Hz), a source-filter split done in
the STFT domain.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

SR = 16000
N_FFT, HOP = 512, 128
N_CEP = 24


def _check(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ConfigError(f"a perturbation takes mono audio (1-D), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("audio holds NaN or Inf")
    return x


def _stft(x):
    import librosa
    return librosa.stft(x, n_fft=N_FFT, hop_length=HOP, window="hann", center=True)


def _istft(S, n: int):
    import librosa
    return librosa.istft(S, hop_length=HOP, window="hann", center=True, length=n)


def log_envelope(S: np.ndarray, n_cep: int = N_CEP) -> np.ndarray:
    """(freq, frames) cepstrally smoothed natural-log magnitude of an STFT."""
    L = np.log(np.abs(S) + 1e-9)
    c = np.fft.irfft(L, n=N_FFT, axis=0)
    lift = np.zeros(N_FFT)
    lift[0] = 1.0
    lift[1:n_cep] = 2.0                                       # causal lifter: the even cepstrum folded once
    return np.fft.rfft(c * lift[:, None], n=N_FFT, axis=0).real


def time_stretch(x, rate: float) -> np.ndarray:
    """Tempo times `rate` (> 1 faster), pitch and formants unchanged; length ≈ len(x) / rate."""
    import librosa
    x = _check(x)
    if not 0.25 <= rate <= 4.0:
        raise ConfigError(f"time-stretch rate must lie in [0.25, 4], got {rate}")
    if rate == 1.0 or len(x) < N_FFT:
        return x.copy()
    return librosa.effects.time_stretch(x, rate=rate, n_fft=N_FFT, hop_length=HOP)


def formant_warp(x, alpha: float) -> np.ndarray:
    """Spectral envelope warped by alpha along frequency (formants x alpha), pitch kept; same length."""
    x = _check(x)
    if not 0.5 <= alpha <= 2.0:
        raise ConfigError(f"formant warp factor must lie in [0.5, 2], got {alpha}")
    if alpha == 1.0 or len(x) < N_FFT:
        return x.copy()
    S = _stft(x)
    E = log_envelope(S)
    f = np.arange(S.shape[0], dtype=np.float64)
    src = f / alpha                                           # E'(f) = E(f / alpha)
    Ew = np.empty_like(E)
    for j in range(E.shape[1]):
        Ew[:, j] = np.interp(src, f, E[:, j])
    y = _istft(S * np.exp(Ew - E), len(x))
    return y * (np.sqrt(np.mean(x ** 2)) / (np.sqrt(np.mean(y ** 2)) + 1e-12))


def pitch_shift(x, semitones: float) -> np.ndarray:
    """Fundamental times 2^(semitones/12), spectral envelope (formants) kept; same length."""
    import librosa
    x = _check(x)
    if not -12.0 <= semitones <= 12.0:
        raise ConfigError(f"pitch shift must lie in [-12, 12] semitones, got {semitones}")
    if semitones == 0 or len(x) < N_FFT:
        return x.copy()
    y = librosa.effects.pitch_shift(x, sr=SR, n_steps=semitones, n_fft=N_FFT, hop_length=HOP)
    S, Y = _stft(x), _stft(y)
    z = _istft(Y * np.exp(log_envelope(S) - log_envelope(Y)), len(x))
    return z * (np.sqrt(np.mean(x ** 2)) / (np.sqrt(np.mean(z ** 2)) + 1e-12))


# ranges of random_speaker (each applied with its probability, in this order)
TEMPO = (0.75, 1.3, 0.5)          # rate range, probability
PITCH = (-5.0, 7.0, 0.6)          # semitones range, probability
FORMANT = (0.85, 1.2, 0.6)        # alpha range (log-uniform), probability


def random_speaker(x, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A random independent tempo / pitch / formant change; returns (audio, the draw). The caller scales
    event times by len(out) / len(x) (every change here stretches time uniformly)."""
    x = _check(x)
    draw = {}
    if rng.random() < FORMANT[2]:
        draw["formant"] = float(np.exp(rng.uniform(np.log(FORMANT[0]), np.log(FORMANT[1]))))
        x = formant_warp(x, draw["formant"])
    if rng.random() < PITCH[2]:
        draw["pitch"] = float(rng.uniform(PITCH[0], PITCH[1]))
        x = pitch_shift(x, draw["pitch"])
    if rng.random() < TEMPO[2]:
        draw["tempo"] = float(rng.uniform(TEMPO[0], TEMPO[1]))
        x = time_stretch(x, draw["tempo"])
    return x, draw
