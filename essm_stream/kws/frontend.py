"""Streaming log-mel frontend: 25 ms Hann window, 10 ms hop, 40 mel bins at 16 kHz.

Causal and chunk-size independent: frame i covers samples [i*hop, i*hop + win) of the stream and is
emitted as soon as its last sample arrives, whatever the chunking (the only state is the tail of
samples not yet covered by a whole frame). With `center=False` this is exactly what
`librosa.feature.melspectrogram(..., center=False)` computes on the whole clip, then log(mel + offset).

The mel filterbank comes from librosa (`librosa.filters.mel`, Slaney scale and norm), computed ONCE
at build time by `frontend_params()` and stored in the program's `frontend` slot as plain JSON;
the runtime reads it back with numpy only (no librosa, no torch).

Why these numbers: 25 ms / 10 ms / 40 mel bins are the Speech Commands KWS front end (Warden 2018,
Zhang et al. "Hello Edge" 2017); n_fft = win = 400 (no zero padding) keeps each frame exactly 25 ms,
so the frame's latency is 25 ms, not the 32 ms a 512-point padded frame would have.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ShapeError

SAMPLE_RATE = 16000
WIN_LENGTH = 400          # 25 ms
HOP_LENGTH = 160          # 10 ms
N_FFT = 400
N_MELS = 40
FMIN = 20.0
FMAX = 8000.0
LOG_OFFSET = 1e-6         # log(mel + 1e-6): -13.8 for digital silence, no -inf


def hann_periodic(n: int) -> np.ndarray:
    """scipy/librosa `get_window('hann', n, fftbins=True)`: the DFT-even Hann window."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def frontend_params(mean=None, std=None, **extra) -> dict:
    """The frontend description stored in a program: parameters + librosa's filterbank (float64)."""
    import librosa  # build time only

    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX,
                                htk=False, norm="slaney", dtype=np.float64)       # (n_mels, n_fft//2+1)
    p = {"type": "logmel", "sample_rate": SAMPLE_RATE, "win_length": WIN_LENGTH, "hop_length": HOP_LENGTH,
         "n_fft": N_FFT, "window": "hann", "n_mels": N_MELS, "fmin": FMIN, "fmax": FMAX,
         "mel_scale": "slaney", "mel_norm": "slaney", "power": 2.0, "log_offset": LOG_OFFSET,
         "library": f"librosa {librosa.__version__}", "mel_basis": basis.tolist(),
         "mean": None if mean is None else [float(v) for v in mean],
         "std": None if std is None else [float(v) for v in std]}
    p.update(extra)
    return p


def library_logmel(y: np.ndarray, params: dict | None = None) -> np.ndarray:
    """The reference: librosa's whole-clip features (center=False), log(mel + offset); (n_frames, n_mels)."""
    import librosa

    p = params or {}
    S = librosa.feature.melspectrogram(
        y=np.asarray(y, dtype=np.float64), sr=p.get("sample_rate", SAMPLE_RATE), n_fft=p.get("n_fft", N_FFT),
        hop_length=p.get("hop_length", HOP_LENGTH), win_length=p.get("win_length", WIN_LENGTH),
        window="hann", center=False, power=2.0, n_mels=p.get("n_mels", N_MELS), fmin=p.get("fmin", FMIN),
        fmax=p.get("fmax", FMAX), htk=False, norm="slaney", dtype=np.float64)
    return np.log(S.T + p.get("log_offset", LOG_OFFSET))


def pcm_to_float(pcm) -> np.ndarray:
    """int16 PCM (scaled by 1/32768) or float PCM in [-1, 1] -> 1-D float64; (n, 1) is accepted."""
    a = np.asarray(pcm)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ShapeError(f"PCM must be mono, 1-D (n,) or (n, 1), got shape {a.shape}")
    if a.dtype == np.int16:
        return a.astype(np.float64) / 32768.0
    if a.dtype in (np.float32, np.float64):
        if not np.all(np.isfinite(a)):
            raise ShapeError("PCM holds NaN or Inf")
        return a.astype(np.float64)
    raise ShapeError(f"PCM must be int16 or float32/float64 in [-1, 1], got dtype {a.dtype}")


class LogMel:
    """Streaming log-mel: `process(pcm)` -> (n_new_frames, n_mels) for any chunk size.

    params: the dict of `frontend_params()` (a program's `frontend` slot). normalize=True applies
    the stored per-bin (x - mean) / std, as the model was trained.
    """

    def __init__(self, params: dict, normalize: bool = True):
        if not isinstance(params, dict) or params.get("type") != "logmel":
            raise ConfigError(f"LogMel needs a frontend dict of type 'logmel' (from frontend_params()), "
                              f"got {str(params)[:80]!r}")
        self.params = params
        self.sr = int(params["sample_rate"])
        self.win, self.hop, self.n_fft = int(params["win_length"]), int(params["hop_length"]), int(params["n_fft"])
        if self.win != self.n_fft:
            raise ConfigError(f"this frontend needs win_length == n_fft, got {self.win} and {self.n_fft}")
        self.basis = np.asarray(params["mel_basis"], dtype=np.float64)           # (n_mels, n_fft//2+1)
        self.n_mels = self.basis.shape[0]
        if self.basis.shape != (self.n_mels, self.n_fft // 2 + 1):
            raise ConfigError(f"mel_basis has shape {self.basis.shape}, expected (n_mels, {self.n_fft // 2 + 1})")
        self.window = hann_periodic(self.win)
        self.offset = float(params["log_offset"])
        self.mean = self.std = None
        if normalize and params.get("mean") is not None:
            self.mean = np.asarray(params["mean"], dtype=np.float64)
            self.std = np.asarray(params["std"], dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Back to the start of a stream: no pending samples, frame counter 0."""
        self._tail = np.zeros(0, dtype=np.float64)   # samples not yet covered by a complete frame
        self.frames = 0                                # frames emitted so far
        self.samples = 0                               # samples consumed so far

    def frame_end_time(self, i: int) -> float:
        """Seconds from the stream start to the last sample of frame i (when it can be emitted)."""
        return (i * self.hop + self.win) / self.sr

    def logmel_frames(self, frames: np.ndarray) -> np.ndarray:
        """(n, win) float64 sample frames -> (n, n_mels) log-mel (unnormalised)."""
        spec = np.fft.rfft(frames * self.window, n=self.n_fft, axis=-1)
        power = spec.real ** 2 + spec.imag ** 2                                    # (n, n_fft//2+1)
        return np.log(power @ self.basis.T + self.offset)

    def process(self, pcm) -> np.ndarray:
        """Consume a chunk (int16 or float PCM); return the frames it completes, float32 (n, n_mels)."""
        x = pcm_to_float(pcm)
        self.samples += len(x)
        buf = np.concatenate([self._tail, x]) if len(self._tail) else x
        n = 0 if len(buf) < self.win else (len(buf) - self.win) // self.hop + 1
        if n == 0:
            self._tail = buf.copy()
            return np.zeros((0, self.n_mels), dtype=np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(buf, self.win)[: n * self.hop: self.hop]
        F = self.logmel_frames(frames)
        self._tail = buf[n * self.hop:].copy()
        self.frames += n
        if self.mean is not None:
            F = (F - self.mean) / self.std
        return F.astype(np.float32)

    def features(self, y) -> np.ndarray:
        """Whole-clip features from a fresh state (the state of this object is left untouched)."""
        x = pcm_to_float(y)
        n = 0 if len(x) < self.win else (len(x) - self.win) // self.hop + 1
        frames = np.lib.stride_tricks.sliding_window_view(x, self.win)[: n * self.hop: self.hop]
        F = self.logmel_frames(frames) if n else np.zeros((0, self.n_mels))
        if self.mean is not None:
            F = (F - self.mean) / self.std
        return F.astype(np.float32)


FRONTEND_KINDS = ("logmel", "speech_embedding")


def make_frontend(params: dict, normalize: bool = True):
    """The streaming frontend a program's `frontend` slot describes: LogMel, or SpeechEmbedding
    (kws/embed.py: onnxruntime + the openwakeword wheel's model files, imported only for that kind).
    A speech_embedding slot may carry "gate": {"margin_db", "hang_s"} (skip the network at the noise floor)."""
    kind = params.get("type") if isinstance(params, dict) else None
    if kind == "logmel":
        return LogMel(params, normalize=normalize)
    if kind == "speech_embedding":
        from .embed import SpeechEmbedding
        g = params.get("gate") or {}
        return SpeechEmbedding(params, normalize=normalize, gate_margin_db=g.get("margin_db"),
                               gate_hang_s=float(g.get("hang_s", 1.0)))
    raise ConfigError(f"unknown frontend type {kind!r}; known: {FRONTEND_KINDS}")
