"""Audio sources for the spotter: microphone, WAV file / array, firmware-bridge frames.

Every source is an iterator of 1-D PCM chunks (int16 or float32, 16 kHz mono) with `close()` and
context-manager support; `overflows` counts chunks dropped because the consumer fell behind.

- MicSource: `sounddevice` input stream whose callback puts chunks into a bounded queue (a full
  queue drops the chunk and counts an overflow, as does PortAudio's own input-overflow flag).
  No input device (or no PortAudio) raises MicUnavailableError with what to do about it.
- WavSource / ArraySource: a 16 kHz mono int16 WAV (stdlib `wave`, no extra dependency) or an
  array, paced in real time (`realtime=True`, sleeping to the chunk's due time) or as fast as possible.
- BridgeAudioSource: audio frames from `firmware_bridge.adapters.SerialFrameSource` (the device
  sends PCM frames over the serial link); imported lazily.
"""
from __future__ import annotations

import queue
import time
import wave
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ESSMError

SR = 16000


class MicUnavailableError(ESSMError, OSError):
    """No microphone can be opened (no input device, no PortAudio, or the device refused)."""


class _Source:
    overflows = 0

    def __iter__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass


class ArraySource(_Source):
    """Chunks of an in-memory recording, paced in real time or not."""

    def __init__(self, pcm: np.ndarray, *, chunk: int = 320, realtime: bool = False, sr: int = SR, clock=time.monotonic,
                 sleep=time.sleep):
        pcm = np.asarray(pcm)
        if pcm.ndim != 1 or pcm.dtype not in (np.int16, np.float32, np.float64):
            raise ConfigError(f"ArraySource needs 1-D int16 or float PCM, got shape {pcm.shape} dtype {pcm.dtype}")
        if chunk < 1:
            raise ConfigError(f"chunk must be >= 1 sample, got {chunk}")
        self.pcm, self.chunk, self.realtime, self.sr = pcm, int(chunk), bool(realtime), sr
        self._pos, self._clock, self._sleep = 0, clock, sleep
        self._t0 = None

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sr

    def __next__(self) -> np.ndarray:
        if self._pos >= len(self.pcm):
            raise StopIteration
        x = self.pcm[self._pos:self._pos + self.chunk]
        self._pos += len(x)
        if self.realtime:
            if self._t0 is None:
                self._t0 = self._clock()
            due = self._t0 + self._pos / self.sr          # a chunk is "available" once its last sample is
            wait = due - self._clock()
            if wait > 0:
                self._sleep(wait)
        return x


def read_wav(path) -> tuple[np.ndarray, int]:
    """A mono 16-bit PCM WAV as (int16 samples, sample rate)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"WAV file {str(path)!r} does not exist")
    try:
        with wave.open(str(path), "rb") as w:
            ch, width, sr, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise ConfigError(f"{str(path)!r} is not a readable PCM WAV file: {e}") from None
    if width != 2:
        raise ConfigError(f"{str(path)!r}: need 16-bit PCM, got {8 * width}-bit")
    x = np.frombuffer(raw, dtype="<i2").reshape(-1, ch)
    return np.ascontiguousarray(x.mean(axis=1).astype(np.int16) if ch > 1 else x[:, 0]), sr


def write_wav(path, pcm: np.ndarray, sr: int = SR) -> None:
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        pcm = np.clip(np.round(np.asarray(pcm, dtype=np.float64) * 32767), -32768, 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.astype("<i2").tobytes())


class WavSource(ArraySource):
    """A 16 kHz mono 16-bit WAV file (stereo is averaged), real-time paced or as fast as possible."""

    def __init__(self, path, *, chunk: int = 320, realtime: bool = True, **kw):
        pcm, sr = read_wav(path)
        if sr != SR:
            raise ConfigError(f"{str(path)!r} is sampled at {sr} Hz; the keyword model needs {SR} Hz "
                              f"(resample it, e.g. `sox in.wav -r 16000 -c 1 -b 16 out.wav`)")
        super().__init__(pcm, chunk=chunk, realtime=realtime, **kw)
        self.path = str(path)


def _sounddevice():
    try:
        import sounddevice as sd
    except ImportError as e:
        raise MicUnavailableError("the microphone needs the `sounddevice` package: pip install sounddevice") from e
    except OSError as e:  # sounddevice raises OSError when the PortAudio library is missing
        raise MicUnavailableError(f"PortAudio is not installed ({e}): apt-get install libportaudio2 "
                                  "(Debian/Ubuntu) or brew install portaudio (macOS)") from None
    return sd


def list_input_devices() -> list[dict]:
    sd = _sounddevice()
    try:
        return [dict(d, index=i) for i, d in enumerate(sd.query_devices()) if d.get("max_input_channels", 0) > 0]
    except Exception:  # PortAudio errors while enumerating: treat as no devices
        return []


class MicSource(_Source):
    """Live microphone at 16 kHz mono int16 through sounddevice; `chunk` samples per callback.

    The callback never blocks: chunks go into a queue of at most `max_chunks`; when it is full the
    newest chunk is dropped and `overflows` counts it (PortAudio input overflows are counted too).
    """

    def __init__(self, *, device=None, chunk: int = 320, max_chunks: int = 50, timeout_s: float = 2.0):
        sd = _sounddevice()
        devices = list_input_devices()
        if not devices:
            raise MicUnavailableError("no audio input device found (PortAudio lists none): plug in or enable a "
                                      "microphone, or run on a recording instead: `essm-stream demo` (bundled) "
                                      "or `essm-stream demo --wav FILE.wav`")
        self.chunk, self.timeout_s = int(chunk), float(timeout_s)
        self.q: queue.Queue = queue.Queue(maxsize=max_chunks)
        self.overflows = 0
        self.input_overflows = 0

        def callback(indata, frames, time_info, status):
            if status and status.input_overflow:
                self.input_overflows += 1
            try:
                self.q.put_nowait(indata[:, 0].copy())
            except queue.Full:
                self.overflows += 1

        try:
            self.stream = sd.InputStream(samplerate=SR, channels=1, dtype="int16", blocksize=self.chunk,
                                         device=device, callback=callback)
            self.stream.start()
        except Exception as e:  # sd.PortAudioError, ValueError for a bad device
            raise MicUnavailableError(f"cannot open the microphone {device if device is not None else '(default)'} "
                                      f"at {SR} Hz mono: {e}") from None

    def __next__(self) -> np.ndarray:
        try:
            return self.q.get(timeout=self.timeout_s)
        except queue.Empty:
            raise MicUnavailableError(f"the microphone delivered nothing for {self.timeout_s} s") from None

    def close(self) -> None:
        s = getattr(self, "stream", None)
        if s is not None:
            s.stop()
            s.close()
            self.stream = None


class BridgeAudioSource(_Source):
    """PCM frames from a microcontroller over the firmware bridge (`SerialFrameSource.read`)."""

    def __init__(self, frame_source, *, timeout_s: float = 1.0):
        if not callable(getattr(frame_source, "read", None)):
            raise ConfigError("BridgeAudioSource needs a firmware_bridge.adapters.SerialFrameSource (with read())")
        self.src, self.timeout_s = frame_source, timeout_s

    @classmethod
    def open(cls, port: str, **link_kw) -> "BridgeAudioSource":
        from firmware_bridge.adapters import SerialFrameSource
        from firmware_bridge.link import Link
        return cls(SerialFrameSource(Link(port, **link_kw).open()))

    def __next__(self) -> np.ndarray:
        x = self.src.read(timeout=self.timeout_s)
        if x is None:
            raise StopIteration
        return np.asarray(x, dtype=np.float32)

    def close(self) -> None:
        link = getattr(self.src, "link", None)
        if link is not None and hasattr(link, "close"):
            link.close()
