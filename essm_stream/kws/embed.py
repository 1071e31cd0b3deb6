"""Second frontend kind: a frozen speech embedding trained on real human speech (96-d every 80 ms).

The network is Google's `speech_embedding` (TF-Hub, Apache-2.0) as re-implemented and shipped in
ONNX form inside the `openwakeword==0.5.1` wheel: `melspectrogram.onnx` (int16-scale PCM -> 32 mel
bands every 10 ms from 512-sample frames) and `embedding_model.onnx` (76 mel frames = 0.775 s ->
96 numbers), computed every 8 mel frames exactly as `openwakeword.utils.AudioFeatures` does (mel
transformed as x / 10 + 2 before the embedding). The model files are read from the installed
wheel, never downloaded and never copied into a program: the program stores their SHA-256 and the
frontend refuses files that differ. (openwakeword's README puts its own *wake-word* models under
CC BY-NC-SA 4.0 and describes this backbone as Google's Apache-2.0 model; we use the backbone only.)

Causal and chunk-size independent: mel frame i covers samples [160 i, 160 i + 512); embedding j
covers mel frames [8 j, 8 j + 76) and is emitted when the last sample of mel frame 8 j + 75 arrives,
i.e. at sample 160 (8 j + 75) + 512. The only state is the samples not yet in a complete mel
frame and the last 75 mel frames.

Cost per 80 ms hop (ONNX Runtime, one thread): the mel ≈ 0.1 ms, the embedding ≈ 1 ms (≈ 44 M MACs);
this frontend costs far more than the ES-SSM step it feeds, so `gate_margin_db` can skip the
embedding network while the input sits at its noise floor (the previous quiet embedding is
repeated): see docs/KWS.md for the measured effect.

Runtime dependency: onnxruntime + openwakeword (the wheel is only used as the model files' home).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .frontend import pcm_to_float

SAMPLE_RATE = 16000
MEL_WIN, MEL_HOP, N_MEL = 512, 160, 32
WINDOW, STEP, DIM = 76, 8, 96
SOURCE = "openwakeword==0.5.1"
MEL_FILE, EMB_FILE = "melspectrogram.onnx", "embedding_model.onnx"


def model_dir() -> Path:
    """Where the installed openwakeword wheel keeps its ONNX models (ConfigError if not installed)."""
    try:
        import importlib.util
        spec = importlib.util.find_spec("openwakeword")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the speech-embedding frontend needs the openwakeword wheel's model files: "
                          "pip install openwakeword==0.5.1 (nothing is downloaded at run time)")
    d = Path(list(spec.submodule_search_locations)[0]) / "resources" / "models"
    for f in (MEL_FILE, EMB_FILE):
        if not (d / f).is_file():
            raise ConfigError(f"{d / f} is missing: reinstall openwakeword==0.5.1")
    return d


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def embedding_params(mean=None, std=None, **extra) -> dict:
    """The frontend description stored in a program (model hashes, framing, normalisation)."""
    d = model_dir()
    p = {"type": "speech_embedding", "source": SOURCE, "sample_rate": SAMPLE_RATE, "mel_win": MEL_WIN,
         "hop_length": MEL_HOP * STEP,                  # samples per output step (what the controllers read)
         "mel_hop": MEL_HOP, "n_mel": N_MEL, "window": WINDOW, "step": STEP, "dim": DIM,
         "mel_transform": "x/10+2", "melspectrogram_sha256": sha256(d / MEL_FILE),
         "embedding_sha256": sha256(d / EMB_FILE),
         "mean": None if mean is None else [float(v) for v in mean],
         "std": None if std is None else [float(v) for v in std]}
    p.update(extra)
    return p


_SESSIONS: dict = {}


def _sessions(params: dict, threads: int = 1):
    import onnxruntime as ort

    key = (params["melspectrogram_sha256"], params["embedding_sha256"], threads)
    if key in _SESSIONS:
        return _SESSIONS[key]
    d = model_dir()
    for f, k in ((MEL_FILE, "melspectrogram_sha256"), (EMB_FILE, "embedding_sha256")):
        if sha256(d / f) != params[k]:
            raise ConfigError(f"{d / f} differs from the model this program was trained with ({params['source']}, "
                              f"sha256 {params[k][:12]}…): install {params['source']}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = threads
    so.log_severity_level = 3
    mel = ort.InferenceSession(str(d / MEL_FILE), so, providers=["CPUExecutionProvider"])
    emb = ort.InferenceSession(str(d / EMB_FILE), so, providers=["CPUExecutionProvider"])
    _SESSIONS[key] = (mel, emb)
    return mel, emb


class SpeechEmbedding:
    """Streaming speech embedding: `process(pcm)` -> (n_new_steps, 96) for any chunk size.

    Attributes the spotter reads like LogMel's: sr, hop (samples per output step), win, n_mels
    (= features per step), frames (steps emitted), mean/std, frame_end_time(i), and last_levels_db
    (input level of each step just emitted: mean of its 8 newest mel frames, in the mel's dB).
    """

    def __init__(self, params: dict, normalize: bool = True, gate_margin_db: float | None = None,
                 gate_hang_s: float = 1.0, threads: int = 1):
        if not isinstance(params, dict) or params.get("type") != "speech_embedding":
            raise ConfigError(f"SpeechEmbedding needs a frontend dict of type 'speech_embedding', got "
                              f"{str(params)[:80]!r}")
        self.params = params
        self.sr = int(params["sample_rate"])
        if self.sr != SAMPLE_RATE or int(params["mel_win"]) != MEL_WIN or int(params["dim"]) != DIM:
            raise ConfigError("speech_embedding frontend: only 16 kHz, 512-sample mel frames, 96-d are supported")
        self.mel_hop, self.mel_win = int(params["mel_hop"]), int(params["mel_win"])
        self.window, self.step = int(params["window"]), int(params["step"])
        self.hop = self.mel_hop * self.step                    # 1280 samples = 80 ms per output step
        self.win = self.mel_hop * (self.window - 1) + self.mel_win   # samples one step sees (12 512)
        self.n_mels = DIM                                      # features per step (spotter's name)
        self.mel_sess, self.emb_sess = _sessions(params, threads)
        self.mean = self.std = None
        if normalize and params.get("mean") is not None:
            self.mean = np.asarray(params["mean"], dtype=np.float64)
            self.std = np.asarray(params["std"], dtype=np.float64)
        self.gate_margin_db = gate_margin_db
        self.gate_hang_steps = max(1, int(round(gate_hang_s * self.sr / self.hop)))
        self.reset()

    def reset(self) -> None:
        self._tail = np.zeros(0, dtype=np.float32)      # int16-scale samples not yet in a whole mel frame
        self._mel = np.zeros((0, N_MEL), dtype=np.float32)   # mel frames not yet consumed (<= 75 + 8)
        self.mel_frames = 0
        self.frames = 0
        self.samples = 0
        self.last_levels_db = np.zeros(0)
        self.embeddings_run = 0                          # network evaluations (the gate skips some)
        self._floor = None
        self._quiet = 0
        self._last = None

    def frame_end_time(self, i: int) -> float:
        """Seconds from the stream start to the last sample step i depends on."""
        return (self.mel_hop * (self.step * i + self.window - 1) + self.mel_win) / self.sr

    def _mel_blocks(self, x: np.ndarray, first: bool) -> tuple[np.ndarray, int]:
        """int16-scale float32 samples -> ((n, 32) raw mel of every complete block, samples consumed).

        ONNX Runtime's mel in quiet bins depends on the input's length and batch size (by up to
        several units), so both the streamed and the whole-clip paths run the same fixed blocks,
        batch 1: frames 0-3 (992 samples) first, then 8 frames (1632 samples) every 1280 samples.
        Block b >= 1 ends with frame 8 b + 3, so embedding j (frames 8 j .. 8 j + 75) is complete
        with block j + 9, as soon as the last sample of its last frame arrives."""
        out, pos = [], 0
        if first:
            b0 = self.mel_win + 3 * self.mel_hop
            if len(x) < b0:
                return np.zeros((0, N_MEL), dtype=np.float32), 0
            out.append(self._run_mel(x[:b0]))
            pos = 4 * self.mel_hop
        blk = self.mel_win + (self.step - 1) * self.mel_hop
        while pos + blk <= len(x):
            out.append(self._run_mel(x[pos:pos + blk]))
            pos += self.hop
        if not out:
            return np.zeros((0, N_MEL), dtype=np.float32), 0
        return np.concatenate(out), pos

    def _run_mel(self, x: np.ndarray) -> np.ndarray:
        out = self.mel_sess.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)[None, :]})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1, N_MEL)

    def _embed(self, windows: np.ndarray) -> np.ndarray:
        """(n, 76, 32) transformed mel -> (n, 96)."""
        out = []
        for i in range(0, len(windows), 256):
            w = windows[i:i + 256, :, :, None].astype(np.float32)
            out.append(np.asarray(self.emb_sess.run(None, {"input_1": w})[0]).reshape(len(w), DIM))
        return np.concatenate(out) if out else np.zeros((0, DIM), np.float32)

    def _normalise(self, E: np.ndarray) -> np.ndarray:
        if self.mean is not None:
            E = (E - self.mean) / self.std
        return E.astype(np.float32)

    def process(self, pcm) -> np.ndarray:
        """Consume a chunk (int16 or float PCM); return the steps it completes, float32 (n, 96)."""
        x = (pcm_to_float(pcm) * 32768.0).astype(np.float32)
        self.samples += len(x)
        buf = np.concatenate([self._tail, x]) if len(self._tail) else x
        M, used = self._mel_blocks(buf, first=self.mel_frames == 0)
        self._tail = buf[used:].copy()
        if len(M):
            self._mel = np.concatenate([self._mel, M]) if len(self._mel) else M
            self.mel_frames += len(M)
        m = 0 if len(self._mel) < self.window else (len(self._mel) - self.window) // self.step + 1
        if m == 0:
            self.last_levels_db = np.zeros(0)
            return np.zeros((0, DIM), dtype=np.float32)
        idx = np.arange(m)[:, None] * self.step + np.arange(self.window)[None, :]
        levels = np.array([self._mel[j * self.step + self.window - self.step: j * self.step + self.window].mean()
                           for j in range(m)], dtype=np.float64)
        run = np.ones(m, dtype=bool)
        if self.gate_margin_db is not None:
            run[:] = False
            for j in range(m):
                lv = levels[j]
                if self._floor is None or lv < self._floor:
                    self._floor = lv
                else:
                    self._floor += 3.0 * self.hop / self.sr
                self._quiet = 0 if lv > self._floor + self.gate_margin_db else self._quiet + 1
                run[j] = self._quiet < self.gate_hang_steps or (self._last is None and not run[:j].any())
        W = self._mel[idx] / 10.0 + 2.0                               # (m, 76, 32)
        E = np.zeros((m, DIM), dtype=np.float32)
        if run.any():
            E[run] = self._embed(W[run])
        for j in range(m):                                             # gated steps repeat the last one
            if run[j]:
                self._last = E[j]
            else:
                E[j] = self._last
        self.embeddings_run += int(run.sum())
        self._mel = self._mel[m * self.step:]
        self.frames += m
        self.last_levels_db = levels
        return self._normalise(E)

    def features(self, y) -> np.ndarray:
        """Whole-clip steps from a fresh state (this object's stream state is left untouched)."""
        x = (pcm_to_float(y) * 32768.0).astype(np.float32)
        if len(x) < self.win:
            return np.zeros((0, DIM), dtype=np.float32)
        return self._normalise(self._embed(self._windows(x)))

    def _windows(self, x: np.ndarray) -> np.ndarray:
        """int16-scale float32 samples -> (steps, 76, 32) transformed mel windows."""
        M, _ = self._mel_blocks(x, first=True)
        m = (len(M) - self.window) // self.step + 1
        idx = np.arange(m)[:, None] * self.step + np.arange(self.window)[None, :]
        return M[idx] / 10.0 + 2.0
