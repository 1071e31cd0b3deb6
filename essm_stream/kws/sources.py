"""Audio sources for the spotter: microphone, WAV file / array, firmware-bridge frames.

Every source is an iterator of 1-D PCM chunks (int16 or float32, mono, at the program's rate) with
`close()` and context-manager support; `overflows` counts chunks dropped because the consumer fell behind.

- MicSource: a `sounddevice` input stream at the device's native rate and block size (safe latency),
  whose callback only writes into a bounded SampleRing (a full ring drops the block and counts an
  overflow); the consumer resamples to the program's rate with StreamingResampler (scipy's polyphase
  filter, state kept across blocks) and hands out chunks of any size. No input device (or no
  PortAudio) raises MicUnavailableError with what to do about it; a silent device MicStallError.
- WavSource / ArraySource: a mono int16 WAV at any rate >= 8 kHz (stdlib `wave`; resampled to the
  program's rate at load) or an array, paced in real time (`realtime=True`, sleeping to the chunk's due time) or as fast as possible.
- BridgeAudioSource: audio frames from `firmware_bridge.adapters.SerialFrameSource` (the device
  sends PCM frames over the serial link); imported lazily.
"""
from __future__ import annotations

import logging
import threading
import time
import wave
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ESSMError

SR = 16000
log = logging.getLogger(__name__)


class MicUnavailableError(ESSMError, OSError):
    """No microphone can be opened (no input device, no PortAudio, or the device refused)."""


class MicStallError(MicUnavailableError, TimeoutError):
    """The microphone opened but stopped delivering audio (or never started)."""


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
    """A mono 16-bit PCM WAV, written atomically (float PCM in [-1, 1] is scaled by 32767)."""
    import io

    from ..fileio import atomic_write_bytes
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        pcm = np.clip(np.round(np.asarray(pcm, dtype=np.float64) * 32767), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sr))
        w.writeframes(pcm.astype("<i2").tobytes())
    atomic_write_bytes(path, buf.getvalue())


class WavSource(ArraySource):
    """A mono 16-bit WAV file (stereo is averaged), real-time paced or as fast as possible.

    A file at another rate than the program's is resampled once at load with the microphone path's
    filter (StreamingResampler: scipy's polyphase Kaiser sinc), so a 44.1 / 48 kHz recording plays
    the same as the microphone that made it; `file_sr` keeps the file's own rate.
    """

    MIN_SR = 8000      # below this a 16 kHz model's upper bands would be empty: refuse, do not guess

    def __init__(self, path, *, chunk: int = 320, realtime: bool = True, rate: int = SR, **kw):
        pcm, sr = read_wav(path)
        if sr < self.MIN_SR:
            raise ConfigError(f"{str(path)!r} is sampled at {sr} Hz; need at least {self.MIN_SR} Hz "
                              f"(the keyword model runs at {rate} Hz)")
        self.file_sr = sr
        if sr != rate:
            log.info("resampling %s from %d Hz to %d Hz", path, sr, rate)
            r = StreamingResampler(sr, rate)
            y = np.concatenate([r.process(pcm.astype(np.float64)), r.flush()])
            pcm = np.clip(np.round(y), -32768, 32767).astype(np.int16)
        super().__init__(pcm, chunk=chunk, realtime=realtime, sr=rate, **kw)
        self.path = str(path)


class StreamingResampler:
    """Rational polyphase resampler sr_in -> sr_out that keeps its filter state across blocks.

    The filter is scipy.signal.resample_poly's default (a Kaiser-windowed sinc, firwin(2*half_len+1,
    1/max(up, down), window=("kaiser", 5.0)) x up with half_len = 10 * max(up, down), zero phase), so
    `process(a) + process(b) + flush()` equals `resample_poly(concatenate([a, b]), up, down)` for any
    split (to float rounding; every output is summed tap by tap in the same order however the input is
    chunked, so chunked and one-shot outputs are bitwise equal). Output n is emitted as soon as the
    last input it needs has arrived: the delay is half_len / up input samples (0.6 ms at 44.1 kHz).
    """

    def __init__(self, sr_in: int, sr_out: int, *, window=("kaiser", 5.0)):
        from math import gcd

        from scipy.signal import firwin
        if int(sr_in) != sr_in or int(sr_out) != sr_out or sr_in < 1 or sr_out < 1:
            raise ConfigError(f"sample rates must be positive integers, got {sr_in} -> {sr_out}")
        self.sr_in, self.sr_out, self.window = int(sr_in), int(sr_out), window
        g = gcd(self.sr_in, self.sr_out)
        self.up, self.down = self.sr_out // g, self.sr_in // g
        self.identity = self.up == self.down == 1
        self.n_in = 0       # input samples consumed
        self.n_out = 0      # output samples emitted
        if self.identity:
            return
        m = max(self.up, self.down)
        self.half_len = 10 * m
        h = firwin(2 * self.half_len + 1, 1.0 / m, window=window) * self.up
        self.taps = -(-len(h) // self.up)                                       # taps per phase
        hp = np.zeros(self.taps * self.up)
        hp[:len(h)] = h
        self.H = np.ascontiguousarray(hp.reshape(self.taps, self.up).T)       # H[p, j] = h[p + j*up]
        self._j = np.arange(self.taps)
        self._x = np.zeros(self.taps, dtype=np.float64)    # history; _x[k] is input sample k + _x0
        self._x0 = -self.taps                               # (negative indices: the zeros before the start)

    def _emit(self, n_end: int) -> np.ndarray:
        """Outputs n_out .. n_end-1 from the history (all their inputs must be there)."""
        n = np.arange(self.n_out, n_end, dtype=np.int64)
        if not len(n):
            return np.zeros(0, dtype=np.float64)
        pos = n * self.down + self.half_len          # output n sits at upsampled position pos
        i_hi = pos // self.up                         # the newest input sample it touches
        ph = pos - i_hi * self.up
        # y[n] = sum_j x[i_hi - j] h[ph + j up], added tap after tap in the same order for every output
        # (numpy's own reductions may regroup the sum with the array's shape: chunking would show)
        P = self._x[(i_hi - self._x0)[None, :] - self._j[:, None]] * self.H[ph].T    # (taps, n)
        y = P[0].copy()
        for j in range(1, self.taps):
            y += P[j]
        self.n_out = n_end
        return y

    def _trim(self) -> None:
        keep_from = (self.n_out * self.down + self.half_len) // self.up - self.taps + 1   # oldest input still needed
        drop = keep_from - self._x0
        if drop > 0:
            self._x = self._x[drop:]
            self._x0 += drop

    def process(self, x) -> np.ndarray:
        """Feed input samples (1-D); return every output sample they complete (float64)."""
        x = np.asarray(x, dtype=np.float64).ravel()
        self.n_in += len(x)
        if self.identity:
            self.n_out += len(x)
            return x.copy()
        self._x = np.concatenate([self._x, x])
        # output n is complete once input i_hi(n) = (n*down + half_len) // up has arrived
        n_end = max(self.n_out, (self.n_in * self.up - 1 - self.half_len) // self.down + 1)
        out = [self._emit(min(k + 8192, n_end)) for k in range(self.n_out, n_end, 8192)]
        self._trim()
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)

    def flush(self) -> np.ndarray:
        """The outputs still owed at the end of the signal (its future taken as zeros), as resample_poly
        gives ceil(n_in * up / down) samples in all; the resampler then starts a new signal."""
        if self.identity:
            self.n_in = self.n_out = 0
            return np.zeros(0, dtype=np.float64)
        total = -(-self.n_in * self.up // self.down)
        need_in = (max(total - 1, 0) * self.down + self.half_len) // self.up + 1
        self._x = np.concatenate([self._x, np.zeros(max(0, need_in - (self._x0 + len(self._x))))])
        y = self._emit(total) if total > self.n_out else np.zeros(0, dtype=np.float64)
        self.__init__(self.sr_in, self.sr_out, window=self.window)
        return y


class SampleRing:
    """Bounded single-producer / single-consumer FIFO of float32 samples between an audio callback and
    the consumer. A block that does not fit is dropped whole (the buffered audio stays contiguous):
    `overflows` counts dropped blocks and `dropped` their samples. The writer never waits."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ConfigError(f"ring capacity must be >= 1 sample, got {capacity}")
        self.buf = np.zeros(int(capacity), dtype=np.float32)
        self.capacity = int(capacity)
        self.written = 0        # samples ever written (kept)
        self.read_pos = 0       # samples ever read
        self.overflows = 0
        self.dropped = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return self.written - self.read_pos

    def write(self, x) -> bool:
        """Append a block; False (and counted) when it does not fit."""
        x = np.asarray(x, dtype=np.float32).ravel()
        n = len(x)
        with self._cond:
            if n > self.capacity - (self.written - self.read_pos):
                self.overflows += 1
                self.dropped += n
                return False
            i = self.written % self.capacity
            k = min(n, self.capacity - i)
            self.buf[i:i + k] = x[:k]
            self.buf[:n - k] = x[k:]
            self.written += n
            self._cond.notify()
        return True

    def read(self, max_n: int | None = None, timeout: float | None = None) -> np.ndarray:
        """Up to max_n buffered samples (all when None), waiting up to `timeout` s for the first one;
        an empty array when none came."""
        with self._cond:
            if self.written == self.read_pos:
                self._cond.wait_for(lambda: self.written > self.read_pos, timeout=timeout)
            n = self.written - self.read_pos
            if max_n is not None:
                n = min(n, int(max_n))
            i = self.read_pos % self.capacity
            k = min(n, self.capacity - i)
            out = np.concatenate([self.buf[i:i + k], self.buf[:n - k]])
            self.read_pos += n
        return out


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
    """The input devices PortAudio sees: its device dicts plus `index`, `hostapi_name` and `default`
    (True for the default input). An empty list when there are none (or enumeration fails)."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
    except Exception as e:  # PortAudio errors while enumerating: treat as no devices
        log.warning("PortAudio could not list audio devices: %s", e)
        return []
    try:
        apis = [a["name"] for a in sd.query_hostapis()]
    except Exception:
        apis = []
    try:
        default_in = int(sd.default.device[0])
    except Exception:
        default_in = -1
    out = []
    for i, d in enumerate(devices):
        if d.get("max_input_channels", 0) > 0:
            h = d.get("hostapi", -1)
            out.append(dict(d, index=i, hostapi_name=apis[h] if 0 <= h < len(apis) else "?", default=i == default_in))
    return out


def format_input_devices(devices: list[dict]) -> str:
    """The table `essm-stream demo --list-devices` prints."""
    if not devices:
        return "no audio input devices (PortAudio lists none)"
    lines = ["  index  in-ch  default-rate  host API   name"]
    for d in devices:
        lines.append(f"{'*' if d.get('default') else ' '} {d['index']:5d}  {d['max_input_channels']:5d}  "
                     f"{d.get('default_samplerate', float('nan')):9.0f} Hz  {d.get('hostapi_name', '?'):<9s}  {d['name']}")
    lines.append("(* = the default input; choose another with --device INDEX or a unique part of its name)")
    return "\n".join(lines)


class MicSource(_Source):
    """Live microphone resampled to `rate` Hz mono float32, `chunk` samples per item.

    Built for what Linux desktops and boards run (PulseAudio / PipeWire through ALSA, plain ALSA):
    - the stream is opened at the device's native sample rate (its `default_samplerate`, or
      `device_rate`) and resampled to `rate` by a StreamingResampler (scipy's polyphase filter, state
      kept across blocks); pass the program's frontend rate as `rate`;
    - the device chooses its block size (`blocksize=0`) at a safe `latency` ("high" by default, or
      seconds); its blocks go through a bounded SampleRing of `buffer_s` seconds, so the consumer's
      hop (`chunk`) is independent of the device's block size. A full ring drops the newest block and
      counts it in `overflows` (PortAudio's own input-overflow flags are in `input_overflows`);
    - `channel`: "mix" averages the opened channels (`channels`, default min(2, device's)), an int
      picks that channel;
    - the first block may take a while (PulseAudio renders an idle null sink's monitor in blocks of
      up to 2 s; a suspended source has to resume): the source waits up to `start_timeout_s` for it,
      then raises MicStallError when nothing arrives for `stall_timeout_s`.
    No input device or no PortAudio raises MicUnavailableError with what to do about it.
    """

    def __init__(self, *, device=None, chunk: int = 320, rate: int = SR, device_rate: int | None = None,
                 channel="mix", channels: int | None = None, blocksize: int = 0, latency="high",
                 buffer_s: float = 2.0, start_timeout_s: float = 5.0, stall_timeout_s: float = 2.0):
        if int(chunk) < 1:
            raise ConfigError(f"chunk must be >= 1 sample, got {chunk}")
        if int(rate) != rate or rate < 1:
            raise ConfigError(f"rate must be a positive integer (Hz), got {rate}")
        if device_rate is not None and (int(device_rate) != device_rate or device_rate < 1):
            raise ConfigError(f"device_rate must be a positive integer (Hz), got {device_rate}")
        if int(blocksize) != blocksize or blocksize < 0:
            raise ConfigError(f"blocksize must be an integer >= 0 (0: the device chooses), got {blocksize}")
        if not (latency in ("high", "low") or (isinstance(latency, (int, float)) and latency > 0)):
            raise ConfigError(f"latency must be 'high', 'low' or seconds > 0, got {latency!r}")
        for name, v in (("buffer_s", buffer_s), ("start_timeout_s", start_timeout_s),
                        ("stall_timeout_s", stall_timeout_s)):
            if not v > 0:
                raise ConfigError(f"{name} must be > 0, got {v}")
        if not (channel == "mix" or (isinstance(channel, (int, np.integer)) and channel >= 0)):
            raise ConfigError(f"channel must be 'mix' or a channel index >= 0, got {channel!r}")
        sd = _sounddevice()
        if not list_input_devices():
            raise MicUnavailableError("no audio input device found (PortAudio lists none): plug in or enable a "
                                      "microphone, or run on a recording instead: `essm-stream demo` (bundled) "
                                      "or `essm-stream demo --wav FILE.wav`")
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        try:
            info = dict(sd.query_devices(device, kind="input"))
        except Exception as e:  # ValueError (no / several matches), PortAudioError (no default input)
            raise MicUnavailableError(f"no input device {device if device is not None else '(default)'}: {e} "
                                      "(list them with `essm-stream demo --list-devices`)") from None
        max_ch = int(info.get("max_input_channels", 0))
        if channels is None:
            channels = channel + 1 if channel != "mix" else min(2, max_ch)
        if not 1 <= channels <= max(max_ch, 1):
            raise ConfigError(f"device {info.get('name')!r} has {max_ch} input channels; cannot open {channels}")
        if channel != "mix" and channel >= channels:
            raise ConfigError(f"channel {channel} is not among the {channels} opened channels (0..{channels - 1})")
        dev_rate = int(round(device_rate if device_rate is not None else info.get("default_samplerate", rate)))
        self.device_name = str(info.get("name", device))
        self.chunk, self.rate, self.device_rate = int(chunk), int(rate), dev_rate
        self.channel, self.channels = channel, int(channels)
        self.start_timeout_s, self.stall_timeout_s = float(start_timeout_s), float(stall_timeout_s)
        self.resampler = StreamingResampler(dev_rate, self.rate)
        self.ring = SampleRing(max(int(buffer_s * dev_rate), 1))
        self.input_overflows = 0
        self._pending = np.zeros(0, dtype=np.float64)
        self._n_dev = 0                 # device samples delivered by the callback (kept or dropped)
        self._first_frames = 0
        self._t_first = self._t_last = None
        self._warned_overflows = 0
        self.stream = None

        def callback(indata, frames, time_info, status):   # PortAudio's thread: no allocation-heavy work, no waits
            now = time.perf_counter()
            if status and status.input_overflow:
                self.input_overflows += 1
            x = indata[:, channel] if channel != "mix" else (indata[:, 0] if indata.shape[1] == 1
                                                             else indata.mean(axis=1))
            if self._t_first is None:
                self._t_first, self._first_frames = now, frames
            self._t_last = now
            self._n_dev += frames
            self.ring.write(x)

        try:
            self.stream = sd.InputStream(samplerate=dev_rate, channels=self.channels, dtype="float32",
                                         blocksize=int(blocksize), latency=latency, device=device,
                                         callback=callback)
            self._t_start = time.perf_counter()
            self.stream.start()
        except Exception as e:  # sd.PortAudioError, ValueError for a bad device / rate
            self.close()
            raise MicUnavailableError(f"cannot open the microphone {self.device_name!r} at {dev_rate} Hz, "
                                      f"{self.channels} channel(s): {e} (another rate: --device-rate; "
                                      "devices: --list-devices)") from None
        self.blocksize = int(blocksize)
        self.latency_s = float(getattr(self.stream, "latency", float("nan")) or float("nan"))
        log.info("microphone %r: %d Hz x %d ch (%s) -> %d Hz mono, blocksize %s, latency %.3f s, ring %.1f s",
                 self.device_name, dev_rate, self.channels, channel, self.rate,
                 self.blocksize or "device's", self.latency_s, self.ring.capacity / dev_rate)

    @property
    def overflows(self) -> int:
        """Device blocks dropped because the consumer fell behind (the ring was full)."""
        return self.ring.overflows

    def __next__(self) -> np.ndarray:
        if self.stream is None:
            raise StopIteration
        while len(self._pending) < self.chunk:
            if self._t_first is None:
                wait = max(self._t_start + self.start_timeout_s - time.perf_counter(), 0.0)
            else:
                wait = self.stall_timeout_s
            raw = self.ring.read(timeout=wait)
            if not len(raw):
                if self._t_first is None:
                    raise MicStallError(f"the microphone {self.device_name!r} delivered nothing within "
                                        f"{self.start_timeout_s} s of starting (is the input muted or suspended? "
                                        "a longer start_timeout_s may help)")
                raise MicStallError(f"the microphone {self.device_name!r} delivered nothing for "
                                    f"{self.stall_timeout_s} s (after {self._n_dev / self.device_rate:.1f} s of audio)")
            self._pending = np.concatenate([self._pending, self.resampler.process(raw)])
        if self.ring.overflows > self._warned_overflows:
            log.warning("microphone: %d device block(s) dropped so far (%.2f s of audio): the consumer fell behind",
                        self.ring.overflows, self.ring.dropped / self.device_rate)
            self._warned_overflows = self.ring.overflows
        y, self._pending = self._pending[:self.chunk], self._pending[self.chunk:]
        return y.astype(np.float32)

    def stats(self) -> dict:
        """What the device delivered: start-up delay, audio vs wall seconds since the first block and
        their ratio (1.0 = real time), overflows, the stream's settings."""
        t1, t2 = self._t_first, self._t_last
        audio = (self._n_dev - self._first_frames) / self.device_rate
        wall = (t2 - t1) if t1 is not None else 0.0
        return {"device": self.device_name, "device_rate": self.device_rate, "rate": self.rate,
                "channels": self.channels, "channel": self.channel, "blocksize": self.blocksize,
                "latency_s": self.latency_s, "start_s": (t1 - self._t_start) if t1 is not None else None,
                "audio_s": self._n_dev / self.device_rate, "steady_audio_s": audio, "steady_wall_s": wall,
                "realtime_ratio": audio / wall if wall > 0 else None, "overflows": self.ring.overflows,
                "dropped_s": self.ring.dropped / self.device_rate, "input_overflows": self.input_overflows}

    def close(self) -> None:
        s = getattr(self, "stream", None)
        if s is not None:
            self.stream = None
            for f in (s.stop, s.close):
                try:
                    f()
                except Exception as e:  # closing a stream that failed to start
                    log.debug("microphone %s: %s", f.__name__, e)


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
