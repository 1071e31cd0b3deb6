"""Device emulator: a microcontroller speaking the bridge protocol on a pty pair.

    python -m firmware_bridge.emulator --rate 1000 --channels 6 --link /tmp/essm-dev

prints the pty path (``/dev/pts/N``, or the stable ``--link`` symlink; at exit a JSON summary of
its counters on stderr), then streams SENSOR_FRAMEs
once the host says HELLO, sends TELEMETRY from an INA219/INA226-style power model whose power
follows the budget K (``P = p_idle_w + K * p_per_k_w``; energy integrated in µJ, monotonic),
answers SET_BUDGET with BUDGET_REPORT and HEARTBEAT pings with acks, and injects faults (seeded):

* per streamed frame, with the given probabilities: ``bitflip``, ``drop_byte``, ``truncate``,
  ``garbage`` (a noise burst + 0x00 before the frame);
* per second: ``stall`` (silent, deaf for ``stall_s``) and ``disconnect`` (pty closed, a new one
  opened after ``disconnect_s``, the ``--link`` symlink repointed, seq restarts as after a reset).
  Frames still queued in the device's TX ring at a disconnect are lost and counted in
  ``sent["tx_lost_at_disconnect"]``.

``--link PATH`` must not exist, or be a symlink to a pty (left by an earlier run): a regular file,
directory or other symlink there is refused (ConfigError), never replaced or deleted.

Faults hit streamed frames only (SENSOR_FRAME, TELEMETRY, periodic HEARTBEAT); HELLO and replies
go out clean so handshakes stay deterministic. ``injected`` counts everything injected:
``frames_corrupted`` equals the seq numbers the host must see missing, ``rejects_expected`` the
segments its decoder must throw away (``resyncs``).

In-process: ``with DeviceEmulator(rate_hz=1000) as emu: Link(emu.port) ...`` (start()/stop()).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
import os
import pty
import random
import select
import signal
import sys
import threading
import time
import tty
import wave
from collections import deque
from dataclasses import dataclass

import numpy as np

from . import faults
from .errors import ConfigError
from .framing import FLAG_ACK, FLAG_ACK_REQUEST, MAX_PAYLOAD
from .protocol import (CAP_BUDGET, CAP_OUTPUT, CAP_SENSOR_F32, CAP_SENSOR_I16, CAP_TELEMETRY, BudgetReport,
                       Decoder, Encoder, Error, ErrorCode, Heartbeat, Hello, Message, Output, Role, SampleFormat,
                       SensorFrame, SetBudget, Telemetry)

log = logging.getLogger(__name__)


@dataclass
class EmulatorConfig:
    """Flat settings; unknown names are rejected by the dataclass constructor."""

    rate_hz: float = 100.0  # sensor frames per second
    channels: int = 6
    samples_per_frame: int = 1  # per channel; frame carries channels * samples_per_frame samples
    sample_format: str = "f32"  # "f32" | "i16"
    source: str = "imu"  # "imu" | "sine" | "noise" | path to .npy (T,) / (T, C) or .wav (int16)
    telemetry_hz: float = 50.0
    heartbeat_hz: float = 10.0
    wait_for_hello: bool = True  # stream only after the host's HELLO (as a firmware would)
    link_path: str | None = None  # stable symlink to the current pty (survives disconnects)
    # power monitor model
    k: int = 16
    p_idle_w: float = 1.5
    p_per_k_w: float = 0.05
    v_nominal: float = 5.0
    r_source_ohm: float = 0.05
    t_ambient_c: float = 25.0
    theta_c_per_w: float = 8.0  # steady-state temperature rise per watt
    tau_thermal_s: float = 5.0
    power_noise_w: float = 0.0
    # faults
    seed: int = 0
    bitflip: float = 0.0
    drop_byte: float = 0.0
    truncate: float = 0.0
    garbage: float = 0.0
    garbage_max: int = 64
    stall: float = 0.0  # stalls per second
    stall_s: float = 0.05
    disconnect: float = 0.0  # disconnects per second
    disconnect_s: float = 0.2
    tx_buffer_frames: int = 4096  # device TX ring; oldest frame dropped (counted) when the host stalls

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", "int") and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ConfigError(f"{f.name}={v!r}: expected a number")
        if self.rate_hz <= 0 or self.telemetry_hz <= 0 or self.heartbeat_hz <= 0:
            raise ConfigError(f"rates must be > 0 Hz (rate_hz={self.rate_hz}, telemetry_hz={self.telemetry_hz}, "
                              f"heartbeat_hz={self.heartbeat_hz})")
        if self.sample_format not in ("f32", "i16"):
            raise ConfigError(f"sample_format={self.sample_format!r}, expected 'f32' or 'i16'")
        if not 1 <= self.channels <= 255 or self.samples_per_frame < 1:
            raise ConfigError(f"channels={self.channels} must be 1..255 and "
                              f"samples_per_frame={self.samples_per_frame} >= 1")
        for name in ("bitflip", "drop_byte", "truncate", "garbage"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}={getattr(self, name)} is a probability per frame, expected 0..1")
        per = 4 if self.sample_format == "f32" else 2
        if 8 + per * self.channels * self.samples_per_frame > MAX_PAYLOAD:   # 8: the SENSOR_FRAME header
            raise ConfigError(f"channels={self.channels} x samples_per_frame={self.samples_per_frame} "
                              f"{self.sample_format} samples do not fit a {MAX_PAYLOAD}-byte payload "
                              f"(at most {(MAX_PAYLOAD - 8) // per} samples per frame)")
        if self.tx_buffer_frames < 2:
            raise ConfigError(f"tx_buffer_frames={self.tx_buffer_frames} must be >= 2")
        if self.bitflip + self.drop_byte + self.truncate + self.garbage > 1:
            raise ConfigError("bitflip + drop_byte + truncate + garbage must not exceed 1")


class _Source:
    """Sample generator: ``next() -> (channels * samples_per_frame,)`` float32, or int16 for .wav."""

    def __init__(self, cfg: EmulatorConfig, rng: np.random.Generator):
        self.cfg, self.rng, self.t = cfg, rng, 0
        self.data: np.ndarray | None = None
        src = cfg.source
        if src.endswith(".npy"):
            a = np.load(src)
            self.data = a.reshape(len(a), -1).astype(np.float32)
        elif src.endswith(".wav"):
            with wave.open(src, "rb") as w:
                if w.getsampwidth() != 2:
                    raise ConfigError(f"{src}: {8 * w.getsampwidth()}-bit WAV, expected 16-bit PCM")
                a = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
            self.data = a.astype(np.int16)
        elif src not in ("imu", "sine", "noise"):
            raise ConfigError(f"source={src!r}, expected 'imu', 'sine', 'noise' or a .npy/.wav path")
        if self.data is not None:
            if len(self.data) == 0:
                raise ConfigError(f"{src}: recording is empty")
            if self.data.shape[1] != cfg.channels:
                raise ConfigError(f"{src} has {self.data.shape[1]} channels, channels={cfg.channels}")
        self._att = np.zeros(3)

    def next(self) -> np.ndarray:
        c, n = self.cfg.channels, self.cfg.samples_per_frame
        if self.data is not None:
            idx = (self.t + np.arange(n)) % len(self.data)
            self.t += n
            return self.data[idx].reshape(-1)
        dt = 1.0 / (self.cfg.rate_hz * n)
        tt = (self.t + np.arange(n))[:, None] * dt  # (n, 1)
        self.t += n
        if self.cfg.source == "sine":
            x = np.sin(2 * np.pi * (1.0 + np.arange(c))[None, :] * tt)
        elif self.cfg.source == "noise":
            x = self.rng.standard_normal((n, c))
        else:  # imu: accel (gravity through a slowly wandering attitude) then gyro, + noise
            x = np.empty((n, c))
            for i in range(n):
                w = 0.2 * self.rng.standard_normal(3)
                self._att = 0.999 * self._att + w * dt
                r, p = self._att[0], self._att[1]
                g = 9.81 * np.array([-math.sin(p), math.sin(r) * math.cos(p), math.cos(r) * math.cos(p)])
                v = np.concatenate([g + 0.05 * self.rng.standard_normal(3), w])
                x[i] = np.resize(v, c)
        return x.astype(np.float32).reshape(-1)


class DeviceEmulator:
    """An emulated MCU on a pty pair. ``start()`` / ``stop()`` or use as a context manager.

    ``port`` is what the host opens. ``injected``, ``sent`` and ``received`` are counters;
    ``decoder`` holds the host->device decoder and its counters.
    """

    def __init__(self, config: EmulatorConfig | None = None, **overrides):
        if config is not None and overrides:
            raise ConfigError("pass either config= or keyword settings, not both")
        self.cfg = config or EmulatorConfig(**overrides)
        self.clock = time.monotonic
        self.injected = dict(bitflip=0, drop_byte=0, truncate=0, garbage=0, stall=0, disconnect=0,
                             frames_corrupted=0, rejects_expected=0)
        self.sent = dict(frames=0, sensor=0, telemetry=0, heartbeat=0, hello=0, budget_report=0, error=0, bytes=0,
                         tx_dropped=0, frames_skipped=0, tx_lost_at_disconnect=0)
        self.received: dict[str, int] = {}
        self.outputs: deque[Output] = deque(maxlen=1024)
        # sensor frame -> OUTPUT naming it (ref_seq): the host's whole loop as the device sees it
        self.loop_latency_s: deque[float] = deque(maxlen=100_000)
        self._sent_at: dict[int, float] = {}
        self.k = self.cfg.k
        self.energy_uj = 0
        self.temperature_c = self.cfg.t_ambient_c
        self._energy_acc = 0.0
        self._rng = random.Random(self.cfg.seed)  # faults: stable across Python versions
        self._src = _Source(self.cfg, np.random.default_rng(self.cfg.seed))
        self._master = self._slave = -1
        self.pty_path = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.streaming = False
        self.paused = False
        self.host_connected = threading.Event()
        self._requests: deque[tuple[str, float]] = deque()
        self._t0 = 0.0
        self._check_link_path()

    # ------------------------------------------------------------------ lifecycle
    def _own_link(self) -> bool:
        """True if link_path is a symlink this emulator may repoint or remove: one to a pty
        (/dev/pts/N, what a previous emulator run left behind) or to our current pty."""
        p = self.cfg.link_path
        if not p or not os.path.islink(p):
            return False
        target = os.readlink(p)
        return target == self.pty_path or target.startswith("/dev/pts/")

    def _check_link_path(self) -> None:
        p = self.cfg.link_path
        if p and os.path.lexists(p) and not self._own_link():
            what = "a symlink to " + repr(os.readlink(p)) if os.path.islink(p) else "a file or directory"
            raise ConfigError(f"link_path {p!r} exists and is {what}, not an emulator's pty link; "
                              "refusing to replace it (remove it or pick another path)")

    @property
    def port(self) -> str:
        return self.cfg.link_path or self.pty_path

    def start(self) -> "DeviceEmulator":
        if self._thread is not None:
            return self
        self._t0 = self.clock()
        self._check_link_path()   # again: something may have appeared there since __init__
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="DeviceEmulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._close_pty()
        self._remove_link()

    def _remove_link(self) -> None:
        p = self.cfg.link_path
        if p and os.path.islink(p) and os.readlink(p) == self.pty_path:   # never someone else's path
            os.unlink(p)

    def __enter__(self) -> "DeviceEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def set_streaming(self, on: bool) -> None:
        """Start/stop the sensor stream (telemetry and heartbeats continue)."""
        with self._lock:
            self.streaming = on
            self._next_frame = self.clock()

    def pause(self, on: bool = True) -> None:
        """Stop (or resume) every periodic frame: sensor, telemetry, heartbeat. Replies continue."""
        with self._lock:
            self.paused = on
            now = self.clock()
            self._next_frame = self._next_tel = self._next_hb = now

    def request_stall(self, seconds: float) -> None:
        """Go silent and deaf for ``seconds`` (from the emulator thread, counted in injected['stall'])."""
        self._requests.append(("stall", seconds))

    def request_disconnect(self, down_s: float | None = None) -> None:
        """Close the pty, reopen a new one after ``down_s`` (counted in injected['disconnect'])."""
        self._requests.append(("disconnect", self.cfg.disconnect_s if down_s is None else down_s))

    @property
    def idle(self) -> bool:
        """True when every queued byte has been written to the pty."""
        return not self._tx

    def power_w(self, k: int | None = None) -> float:
        """The model's steady power at budget k (default: the current one)."""
        return self.cfg.p_idle_w + (self.k if k is None else k) * self.cfg.p_per_k_w

    def _open_pty(self) -> None:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF mangling: a binary link
        os.set_blocking(self._master, False)
        self.pty_path = os.ttyname(self._slave)
        if self.cfg.link_path:
            tmp = f"{self.cfg.link_path}.tmp{os.getpid()}"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(self.pty_path, tmp)
            os.replace(tmp, self.cfg.link_path)  # atomic repoint
        self._decoder = Decoder()
        self._encoder = Encoder(clock_us=lambda: int((self.clock() - self._t0) * 1e6))
        self._tx: deque[bytes] = deque()
        self._tx_off = 0
        now = self.clock()
        self._next_frame = self._next_tel = self._next_hb = now
        self._last_tel = now
        self.streaming = not self.cfg.wait_for_hello
        log.info("emulator on %s", self.port)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = -1

    # ------------------------------------------------------------------ sending
    def _queue(self, frame: bytes) -> None:
        if len(self._tx) >= self.cfg.tx_buffer_frames:
            # drop the oldest *whole* frame: never the one half written to the pty
            del self._tx[1 if self._tx_off else 0]
            self.sent["tx_dropped"] += 1
        self._tx.append(frame)

    def _send(self, m: Message, *, flags: int | None = None, faulty: bool = False) -> None:
        frame = self._encoder.encode(m, flags)
        self.sent["frames"] += 1
        if faulty:
            c = self.cfg
            r = self._rng.random()
            kind = None
            if r < c.bitflip:
                kind = "bitflip"
            elif r < c.bitflip + c.drop_byte:
                kind = "drop_byte"
            elif r < c.bitflip + c.drop_byte + c.truncate:
                kind = "truncate"
            elif r < c.bitflip + c.drop_byte + c.truncate + c.garbage:
                burst = faults.garbage(self._rng, self._rng.randrange(1, c.garbage_max + 1))
                self._queue(burst)
                self.injected["garbage"] += 1
                self.injected["rejects_expected"] += 1
            if kind is not None:
                frame = faults.CORRUPTORS[kind](frame, self._rng)
                self.injected[kind] += 1
                self.injected["frames_corrupted"] += 1
                self.injected["rejects_expected"] += faults.segments(frame)
        self._queue(frame)

    def _flush(self) -> None:
        while self._tx:
            # coalesce queued frames into one write (one syscall per ~32 KiB, not per frame)
            parts, size = [self._tx[0][self._tx_off:]], len(self._tx[0]) - self._tx_off
            for f in list(itertools.islice(self._tx, 1, 256)):
                if size + len(f) > 32768:
                    break
                parts.append(f)
                size += len(f)
            try:
                n = os.write(self._master, b"".join(parts))
            except BlockingIOError:
                return
            except OSError as e:  # host side gone in a way a pty reports as EIO
                log.debug("emulator write: %s", e)
                return
            self.sent["bytes"] += n
            partial = n < size
            n += self._tx_off  # bytes of the queue's head frames now on the wire
            while self._tx and n >= len(self._tx[0]):
                n -= len(self._tx.popleft())
            self._tx_off = n
            if partial:  # the pty buffer is full: come back after the next select
                return

    # ------------------------------------------------------------------ receiving
    def _handle(self, m: Message) -> None:
        name = type(m).__name__
        self.received[name] = self.received.get(name, 0) + 1
        if isinstance(m, Hello):
            self._send(Hello(role=Role.DEVICE, sample_format=SampleFormat.I16 if self._i16 else SampleFormat.F32,
                             channels=self.cfg.channels, frame_rate_hz=self.cfg.rate_hz,
                             capabilities=CAP_SENSOR_F32 | CAP_SENSOR_I16 | CAP_TELEMETRY | CAP_BUDGET | CAP_OUTPUT,
                             fw_version=0x000100, name="essm-emu"))
            self.sent["hello"] += 1
            if not self.streaming:
                self.set_streaming(True)
            self.host_connected.set()
        elif isinstance(m, Heartbeat):
            if m.flags & FLAG_ACK_REQUEST:
                self._send(Heartbeat(token=m.token, uptime_ms=self._uptime_ms()), flags=FLAG_ACK)
        elif isinstance(m, SetBudget):
            self.k = m.k
            self._send(BudgetReport(k=m.k, ref_seq=m.seq, power_w=self.power_w()))
            self.sent["budget_report"] += 1
        elif isinstance(m, BudgetReport):
            self.k = m.k
        elif isinstance(m, Output):
            self.outputs.append(m)
            t = self._sent_at.pop(m.ref_seq, None)
            if t is not None:
                self.loop_latency_s.append(self.clock() - t)
        elif isinstance(m, (SensorFrame, Telemetry)):
            self._send(Error(code=ErrorCode.UNKNOWN_TYPE, ref_seq=m.seq, text=f"device does not accept {name}"))
            self.sent["error"] += 1

    def _uptime_ms(self) -> int:
        return int((self.clock() - self._t0) * 1000)

    @property
    def _i16(self) -> bool:
        return self.cfg.sample_format == "i16" or self.cfg.source.endswith(".wav")

    # ------------------------------------------------------------------ main loop
    def _sensor_frame(self) -> SensorFrame:
        x = self._src.next()
        if x.dtype == np.int16:
            return SensorFrame(samples=x, channels=self.cfg.channels, scale=1 / 32768)
        if self._i16:
            scale = 1 / 1024  # +-32 full scale
            return SensorFrame(samples=np.clip(np.round(x / scale), -32768, 32767).astype(np.int16),
                               channels=self.cfg.channels, scale=scale)
        return SensorFrame(samples=x, channels=self.cfg.channels)

    def _telemetry(self, now: float) -> Telemetry:
        c = self.cfg
        dt = now - self._last_tel
        self._last_tel = now
        p = self.power_w() + (c.power_noise_w * self._rng.gauss(0, 1) if c.power_noise_w else 0.0)
        p = max(p, 0.0)
        # bus voltage sags across the source resistance: V = Vn - R I, I = P / V
        v = (c.v_nominal + math.sqrt(max(c.v_nominal ** 2 - 4 * c.r_source_ohm * p, 0.0))) / 2
        self._energy_acc += p * dt * 1e6
        whole = int(self._energy_acc)
        self.energy_uj += whole  # integer µJ, monotonic by construction
        self._energy_acc -= whole
        t_ss = c.t_ambient_c + c.theta_c_per_w * p
        self.temperature_c += (t_ss - self.temperature_c) * (1 - math.exp(-dt / c.tau_thermal_s))
        return Telemetry(bus_voltage_v=v, current_a=p / v, power_w=p, energy_uj=self.energy_uj,
                         temperature_c=self.temperature_c)

    def _run(self) -> None:
        c = self.cfg
        period, tel_period, hb_period = 1 / c.rate_hz, 1 / c.telemetry_hz, 1 / c.heartbeat_hz
        last = self.clock()
        while not self._stop.is_set():
            now = self.clock()
            # random stalls / disconnects, Poisson in time
            elapsed, last = now - last, now
            if self._requests:
                what, secs = self._requests.popleft()
                if what == "stall":
                    self.injected["stall"] += 1
                    self._stop.wait(secs)
                else:
                    self._disconnect(secs)
                continue
            if c.stall and self._rng.random() < c.stall * elapsed:
                self.injected["stall"] += 1
                self._stop.wait(c.stall_s)
                continue
            if c.disconnect and self._rng.random() < c.disconnect * elapsed:
                self._disconnect()
                continue
            # host -> device
            timeout = 0.0005 if self._tx else 0.002
            try:
                r, _, _ = select.select([self._master], [self._master] if self._tx else [], [], timeout)
            except (OSError, ValueError):
                r = []
            if r:
                try:
                    data = os.read(self._master, 65536)
                except (BlockingIOError, OSError):
                    data = b""
                for m in self._decoder.feed(data):
                    self._handle(m)
            now = self.clock()
            active = not self.paused and (self.host_connected.is_set() or not c.wait_for_hello)
            with self._lock:
                if self.streaming and active:
                    if now - self._next_frame > 1.0:  # more than 1 s behind: skip, do not burst
                        skipped = int((now - self._next_frame) / period)
                        self.sent["frames_skipped"] += skipped
                        self._next_frame += skipped * period
                    burst = 0
                    while self._next_frame <= now and burst < 64:  # then flush, then read: stay responsive
                        burst += 1
                        self._sent_at[self._encoder.seq] = self.clock()
                        if len(self._sent_at) > 4096:  # bounded: forget frames nobody answered
                            self._sent_at.pop(next(iter(self._sent_at)))
                        self._send(self._sensor_frame(), faulty=True)
                        self.sent["sensor"] += 1
                        self._next_frame += period
            if active and now >= self._next_tel:
                self._send(self._telemetry(now), faulty=True)
                self.sent["telemetry"] += 1
                self._next_tel = max(self._next_tel + tel_period, now - 1.0)
            if active and now >= self._next_hb:
                self._send(Heartbeat(uptime_ms=self._uptime_ms()), faulty=True)
                self.sent["heartbeat"] += 1
                self._next_hb = max(self._next_hb + hb_period, now - 1.0)
            self._flush()

    def _disconnect(self, down_s: float | None = None) -> None:
        """Close the pty (the host sees a port error), wait, open a new one; seq restarts at 0.
        Runs on the emulator thread; other threads call ``request_disconnect``."""
        self.injected["disconnect"] += 1
        log.info("emulator: disconnect for %.3f s", self.cfg.disconnect_s if down_s is None else down_s)
        self.sent["tx_lost_at_disconnect"] += len(self._tx)   # queued (or half-written) frames die with the pty
        self._close_pty()
        self._remove_link()  # as udev removes /dev/ttyACM0 on unplug: no stale pts to open
        self.host_connected.clear()
        self._stop.wait(self.cfg.disconnect_s if down_s is None else down_s)
        self._open_pty()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m firmware_bridge.emulator",
                                 description="Emulated MCU speaking the essm-stream bridge protocol on a pty pair.")
    d = EmulatorConfig()
    for f in dataclasses.fields(EmulatorConfig):
        v = getattr(d, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            ap.add_argument(flag, default=v, action=argparse.BooleanOptionalAction, help=f"(default: {v})")
        else:
            typ = {"float": float, "int": int}.get(f.type, str)
            ap.add_argument(flag, type=typ, default=v, help=f"(default: {v})")
    ap.add_argument("--link", dest="link_path", help="alias of --link-path")
    ap.add_argument("--duration", type=float, default=0.0, help="seconds to run, 0 = until Ctrl-C")
    ap.add_argument("--log-level", default="WARNING")
    a = vars(ap.parse_args(argv))
    duration = a.pop("duration")
    logging.basicConfig(level=a.pop("log_level").upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        emu = DeviceEmulator(EmulatorConfig(**a))
    except ConfigError as e:
        ap.error(str(e))
    emu.start()
    print(emu.port, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # terminate() still prints the summary
    try:
        if duration > 0:
            time.sleep(duration)
        else:
            while True:
                time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        emu.stop()
        lat = np.asarray(emu.loop_latency_s) * 1e6
        summary = dict(sent=emu.sent, received=emu.received, injected=emu.injected,
                       host_to_device_decoder=emu._decoder.stats.as_dict(),
                       loop_latency_us=lat.round().astype(int).tolist()[-20000:])
        print(json.dumps(summary), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
