"""Messages, ``encode(message) -> bytes`` and the streaming ``Decoder`` (no port needed).

Every message is a keyword-only dataclass whose fields all have defaults, e.g.
``SensorFrame(samples=np.zeros(6, np.float32))`` or ``Heartbeat()``. ``seq``, ``timestamp_us``
and ``flags`` travel in the frame header; ``encode`` takes them from the message unless given.

    >>> d = Decoder()
    >>> [m] = d.feed(encode(Heartbeat(token=7), seq=3))
    >>> (m.token, m.seq)
    (7, 3)
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import ClassVar

import numpy as np

from . import framing
from .errors import ProtocolError
from .framing import MAX_ENCODED, MAX_PAYLOAD, PROTOCOL_VERSION

log = logging.getLogger(__name__)

SEQ_NONE = 0xFFFF  # ref_seq value meaning "answers no particular frame"


class MsgType(IntEnum):
    HELLO = 0x01
    HEARTBEAT = 0x02
    SENSOR_FRAME = 0x10
    OUTPUT = 0x11
    TELEMETRY = 0x20
    SET_BUDGET = 0x30
    BUDGET_REPORT = 0x31
    ERROR = 0x7F


class SampleFormat(IntEnum):
    F32 = 1
    I16 = 2


class Role(IntEnum):
    HOST = 0
    DEVICE = 1


class OutputKind(IntEnum):
    MODEL = 0  # raw model output y
    ACTION = 1  # actuator command
    DETECTION = 2  # detection / event scores


class ErrorCode(IntEnum):
    UNKNOWN = 0
    BAD_FRAME = 1  # CRC/COBS/length: the peer saw a corrupt frame
    UNKNOWN_TYPE = 2
    BAD_PAYLOAD = 3
    UNSUPPORTED_VERSION = 4
    OVERFLOW = 5  # a queue on the sender overflowed and dropped data
    BAD_BUDGET = 6


CAP_SENSOR_F32 = 1 << 0
CAP_SENSOR_I16 = 1 << 1
CAP_TELEMETRY = 1 << 2
CAP_BUDGET = 1 << 3
CAP_OUTPUT = 1 << 4

_DTYPE = {SampleFormat.F32: np.dtype("<f4"), SampleFormat.I16: np.dtype("<i2")}


def _eq(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@dataclass(kw_only=True, eq=False)
class Message:
    """Base of all messages. Header fields are filled by ``encode`` / the ``Decoder``."""

    TYPE: ClassVar[MsgType]
    seq: int = 0
    timestamp_us: int = 0
    flags: int = 0

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_eq(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    def pack_payload(self) -> bytes:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @classmethod
    def unpack_payload(cls, payload: bytes) -> dict:  # pragma: no cover
        raise NotImplementedError


def _fixed(fmt: str):
    """Helper for fixed-size payloads: returns (Struct, checked unpacker)."""
    st = struct.Struct(fmt)

    def unpack(cls, payload: bytes) -> tuple:
        if len(payload) != st.size:
            raise ProtocolError(f"{cls.TYPE.name} payload is {len(payload)} bytes, expected {st.size}")
        return st.unpack(payload)

    return st, unpack


_HELLO, _hello_unpack = _fixed("<BBBBHHfII16s")


@dataclass(kw_only=True, eq=False)
class Hello(Message):
    """Session start: who speaks, which versions, capabilities and sample format. Resets seq tracking."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    role: int = Role.HOST
    proto_min: int = PROTOCOL_VERSION
    proto_max: int = PROTOCOL_VERSION
    sample_format: int = SampleFormat.F32
    channels: int = 1
    max_payload: int = MAX_PAYLOAD
    frame_rate_hz: float = 0.0
    capabilities: int = 0
    fw_version: int = 0  # (major << 16) | (minor << 8) | patch
    name: str = ""  # <= 16 bytes UTF-8

    def pack_payload(self) -> bytes:
        name = self.name.encode("utf-8")
        if len(name) > 16:
            raise ProtocolError(f"HELLO name {self.name!r} is {len(name)} bytes UTF-8, at most 16")
        return _HELLO.pack(self.role, self.proto_min, self.proto_max, self.sample_format, self.channels,
                           self.max_payload, self.frame_rate_hz, self.capabilities, self.fw_version, name)

    @classmethod
    def unpack_payload(cls, payload: bytes) -> dict:
        r, pmin, pmax, fmt, ch, mp, rate, caps, fw, name = _hello_unpack(cls, payload)
        name_s = name.rstrip(b"\x00").decode("utf-8", errors="replace")  # lenient, as the C side
        return dict(role=r, proto_min=pmin, proto_max=pmax, sample_format=fmt, channels=ch, max_payload=mp,
                    frame_rate_hz=rate, capabilities=caps, fw_version=fw, name=name_s)


_HEARTBEAT, _heartbeat_unpack = _fixed("<II")


@dataclass(kw_only=True, eq=False)
class Heartbeat(Message):
    """Liveness, sent every heartbeat interval by both sides. With FLAG_ACK_REQUEST the peer
    answers at once with a HEARTBEAT carrying FLAG_ACK and the same token (round-trip probe)."""

    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    token: int = 0
    uptime_ms: int = 0

    def pack_payload(self) -> bytes:
        return _HEARTBEAT.pack(self.token & 0xFFFFFFFF, self.uptime_ms & 0xFFFFFFFF)

    @classmethod
    def unpack_payload(cls, payload: bytes) -> dict:
        token, up = _heartbeat_unpack(cls, payload)
        return dict(token=token, uptime_ms=up)


_SENSOR = struct.Struct("<BBHf")  # format, channels, count, scale


@dataclass(kw_only=True, eq=False)
class SensorFrame(Message):
    """A vector of samples (float32 or int16, channel-interleaved). Physical value = sample * scale."""

    TYPE: ClassVar[MsgType] = MsgType.SENSOR_FRAME
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    channels: int = 1
    scale: float = 1.0

    def as_float32(self) -> np.ndarray:
        """Samples as a 1-D float32 array in physical units (``samples * scale``)."""
        x = np.asarray(self.samples)
        if x.dtype == np.float32 and self.scale == 1.0:
            return x
        return x.astype(np.float32) * np.float32(self.scale)

    def pack_payload(self) -> bytes:
        x = np.asarray(self.samples)
        if x.dtype == np.float32:
            fmt = SampleFormat.F32
        elif x.dtype == np.int16:
            fmt = SampleFormat.I16
        else:
            raise ProtocolError(f"SensorFrame samples dtype {x.dtype}, expected float32 or int16")
        x = x.reshape(-1)
        if not 1 <= self.channels <= 255 or x.size % self.channels:
            raise ProtocolError(f"SensorFrame channels={self.channels} must be 1..255 and divide {x.size} samples")
        if x.size > 0xFFFF:
            raise ProtocolError(f"SensorFrame has {x.size} samples, at most 65535")
        return _SENSOR.pack(fmt, self.channels, x.size, self.scale) + x.astype(_DTYPE[fmt], copy=False).tobytes()

    @classmethod
    def unpack_payload(cls, payload: bytes) -> dict:
        if len(payload) < _SENSOR.size:
            raise ProtocolError(f"SENSOR_FRAME payload is {len(payload)} bytes, at least {_SENSOR.size}")
        fmt, ch, count, scale = _SENSOR.unpack_from(payload)
        if fmt not in (1, 2):
            raise ProtocolError(f"SENSOR_FRAME sample format {fmt}, expected 1 (f32) or 2 (i16)")
        dt = _DTYPE[SampleFormat(fmt)]
        if len(payload) != _SENSOR.size + count * dt.itemsize:
            raise ProtocolError(f"SENSOR_FRAME says {count} x {dt.itemsize}-byte samples, "
                                f"payload carries {len(payload) - _SENSOR.size} bytes")
        if ch == 0 or count % ch:
            raise ProtocolError(f"SENSOR_FRAME channels={ch} does not divide count={count}")
        samples = np.frombuffer(payload, dt, count, _SENSOR.size).astype(dt.newbyteorder("="))
        return dict(samples=samples, channels=ch, scale=scale)


_OUTPUT = struct.Struct("<BHH")  # kind, ref_seq, count


@dataclass(kw_only=True, eq=False)
class Output(Message):
    """Model output / action / detection, float32 values. ``ref_seq`` names the sensor frame it answers."""

    TYPE: ClassVar[MsgType] = MsgType.OUTPUT
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    kind: int = OutputKind.MODEL
    ref_seq: int = SEQ_NONE

    def pack_payload(self) -> bytes:
        v = np.asarray(self.values, dtype="<f4").reshape(-1)
        return _OUTPUT.pack(self.kind, self.ref_seq, v.size) + v.tobytes()

    @classmethod
    def unpack_payload(cls, payload: bytes) -> dict:
        if len(payload) < _OUTPUT.size:
            raise ProtocolError(f"OUTPUT payload is {len(payload)} bytes, at least {_OUTPUT.size}")
        kind, ref, count = _OUTPUT.unpack_from(payload)
        if len(payload) != _OUTPUT.size + 4 * count:
            raise ProtocolError(f"OUTPUT says {count} float32 values, "
                                f"payload carries {len(payload) - _OUTPUT.size} bytes")
        values = np.frombuffer(payload, "<f4", count, _OUTPUT.size).astype(np.float32)
        return dict(values=values, kind=kind, ref_seq=ref)


_TELEMETRY, _telemetry_unpack = _fixed("<fffQf")


@dataclass(kw_only=True, eq=False)
class Telemetry(Message):
    """Power monitor reading (INA219/INA226 style). ``energy_uj`` is monotonic (never decreases)."""

    TYPE: ClassVar[MsgType] = MsgType.TELEMETRY
    bus_voltage_v: float = 0.0
    current_a: float = 0.0
    power_w: float = 0.0
    energy_uj: int = 0
    temperature_c: float = float("nan")

    def pack_payload(self) -> bytes:
        return _TELEMETRY.pack(self.bus_voltage_v, self.current_a, self.power_w, self.energy_uj, self.temperature_c)

    @classmethod
    def unpack_payload(cls, payload: bytes) -> dict:
        v, i, p, e, t = _telemetry_unpack(cls, payload)
        return dict(bus_voltage_v=v, current_a=i, power_w=p, energy_uj=e, temperature_c=t)


_SET_BUDGET, _set_budget_unpack = _fixed("<H")


@dataclass(kw_only=True, eq=False)
class SetBudget(Message):
    """Host -> device: the spectral budget K the engine runs at. The device answers BUDGET_REPORT."""

    TYPE: ClassVar[MsgType] = MsgType.SET_BUDGET
    k: int = 1

    def pack_payload(self) -> bytes:
        if not 0 <= self.k <= 0xFFFF:
            raise ProtocolError(f"SET_BUDGET k={self.k} is not a u16")
        return _SET_BUDGET.pack(self.k)

    @classmethod
    def unpack_payload(cls, payload: bytes) -> dict:
        (k,) = _set_budget_unpack(cls, payload)
        return dict(k=k)


_BUDGET_REPORT, _budget_report_unpack = _fixed("<HHf")


@dataclass(kw_only=True, eq=False)
class BudgetReport(Message):
    """The budget K in force and the power measured at it (NaN if unknown). Device -> host as the
    answer to SET_BUDGET (``ref_seq`` = its seq); host -> device as a notice (``ref_seq`` = SEQ_NONE)."""

    TYPE: ClassVar[MsgType] = MsgType.BUDGET_REPORT
    k: int = 0
    ref_seq: int = SEQ_NONE
    power_w: float = float("nan")

    def pack_payload(self) -> bytes:
        if not 0 <= self.k <= 0xFFFF:
            raise ProtocolError(f"BUDGET_REPORT k={self.k} is not a u16")
        return _BUDGET_REPORT.pack(self.k, self.ref_seq, self.power_w)

    @classmethod
    def unpack_payload(cls, payload: bytes) -> dict:
        k, ref, p = _budget_report_unpack(cls, payload)
        return dict(k=k, ref_seq=ref, power_w=p)


_ERROR = struct.Struct("<HH")
ERROR_TEXT_MAX = 64


@dataclass(kw_only=True, eq=False)
class Error(Message):
    """The peer reports a fault; ``text`` is at most 64 bytes UTF-8."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    code: int = ErrorCode.UNKNOWN
    ref_seq: int = SEQ_NONE
    text: str = ""

    def pack_payload(self) -> bytes:
        t = self.text.encode("utf-8")[:ERROR_TEXT_MAX]
        return _ERROR.pack(self.code, self.ref_seq) + t

    @classmethod
    def unpack_payload(cls, payload: bytes) -> dict:
        if not _ERROR.size <= len(payload) <= _ERROR.size + ERROR_TEXT_MAX:
            raise ProtocolError(f"ERROR payload is {len(payload)} bytes, "
                                f"expected {_ERROR.size}..{_ERROR.size + ERROR_TEXT_MAX}")
        code, ref = _ERROR.unpack_from(payload)
        return dict(code=code, ref_seq=ref, text=payload[_ERROR.size:].decode("utf-8", errors="replace"))


MESSAGE_CLASSES: dict[int, type[Message]] = {
    c.TYPE: c for c in (Hello, Heartbeat, SensorFrame, Output, Telemetry, SetBudget, BudgetReport, Error)
}


def encode(message: Message, *, seq: int | None = None, timestamp_us: int | None = None,
           flags: int | None = None) -> bytes:
    """One complete wire frame (COBS-stuffed, 0x00-terminated). Header fields default to the message's."""
    if not isinstance(message, Message):
        raise ProtocolError(f"encode() takes a Message, got {type(message).__name__}")
    return framing.pack_frame(
        message.TYPE, message.pack_payload(),
        seq=message.seq if seq is None else seq,
        timestamp_us=message.timestamp_us if timestamp_us is None else timestamp_us,
        flags=message.flags if flags is None else flags,
    )


def decode_frame(segment: bytes) -> Message:
    """One delimiter-free stuffed segment -> Message; ProtocolError (or a subclass) on any fault."""
    h, payload = framing.unpack_frame(segment)
    cls = MESSAGE_CLASSES.get(h.msg_type)
    if cls is None:
        raise UnknownTypeError(f"unknown message type 0x{h.msg_type:02x}")
    return cls(seq=h.seq, timestamp_us=h.timestamp_us, flags=h.flags, **cls.unpack_payload(payload))


class UnknownTypeError(ProtocolError):
    """A frame passed the CRC but carries a message type this side does not know."""

    reason = "unknown_type"


class Encoder:
    """Stateful sender: numbers frames (u16 seq, wraps) and stamps them with ``clock_us()``."""

    def __init__(self, clock_us=None, first_seq: int = 0):
        import time

        self._clock_us = clock_us or (lambda: time.monotonic_ns() // 1000)
        self.seq = first_seq & 0xFFFF

    def encode(self, message: Message, flags: int | None = None) -> bytes:
        frame = encode(message, seq=self.seq, timestamp_us=self._clock_us() & 0xFFFFFFFF, flags=flags)
        self.seq = (self.seq + 1) & 0xFFFF
        return frame


@dataclass
class DecoderStats:
    """Counters of one Decoder. ``resyncs`` is the number of segments thrown away (every reason);
    ``seq_gaps`` the number of sequence numbers missing between accepted frames."""

    bytes: int = 0
    frames: int = 0
    resyncs: int = 0
    bytes_discarded: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    oversize: int = 0
    short: int = 0
    bad_version: int = 0
    bad_header: int = 0
    unknown_type: int = 0
    bad_payload: int = 0
    seq_gaps: int = 0
    seq_gap_events: int = 0
    seq_reorders: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Decoder:
    """Streaming decoder: ``feed(bytes) -> list[Message]``. Never raises on bad input; counts it.

    Bytes are collected up to the next 0x00; a segment longer than ``max_encoded`` is dropped as
    soon as it grows past the bound (memory stays O(max_encoded)) and the decoder resyncs at the
    next delimiter. Empty segments (repeated 0x00) are idle fill and are ignored.
    """

    def __init__(self, max_encoded: int = MAX_ENCODED):
        self.max_encoded = max_encoded
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._discarding = False
        self._last_seq: int | None = None
        self.last_error: str = ""

    def reset(self) -> None:
        """Forget partial input and sequence state (e.g. after reopening the port); keep counters."""
        self._buf.clear()
        self._discarding = False
        self._last_seq = None

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame (always <= max_encoded)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        data = bytes(data)
        st = self.stats
        st.bytes += len(data)
        out: list[Message] = []
        start, n = 0, len(data)
        while True:
            z = data.find(0, start)
            if z < 0:  # no delimiter in the rest: keep it for the next feed, within the bound
                rest = n - start
                if self._discarding:
                    st.bytes_discarded += rest
                elif len(self._buf) + rest > self.max_encoded:
                    self._reject("oversize", f"oversized frame: more than {self.max_encoded} bytes without a delimiter",
                                 len(self._buf) + rest)
                    self._buf.clear()
                    self._discarding = True
                else:
                    self._buf += data[start:]
                return out
            if self._discarding:  # the tail of an oversized run: already counted
                st.bytes_discarded += z - start
                self._discarding = False
            else:
                if self._buf:
                    self._buf += data[start:z]
                    seg = bytes(self._buf)
                    self._buf.clear()
                else:
                    seg = data[start:z]
                if seg:  # empty segments are idle fill
                    self._segment(seg, out)
            start = z + 1

    def _reject(self, reason: str, msg: str, nbytes: int) -> None:
        st = self.stats
        setattr(st, reason, getattr(st, reason) + 1)
        st.resyncs += 1
        st.bytes_discarded += nbytes
        self.last_error = msg
        log.debug("rejected frame (%s): %s", reason, msg)

    def _segment(self, seg: bytes, out: list) -> None:
        try:
            m = decode_frame(seg)
        except ProtocolError as e:  # payload checks raise plain ProtocolError: bad_payload
            return self._reject(getattr(e, "reason", "bad_payload"), str(e), len(seg))
        st = self.stats
        st.frames += 1
        if self._last_seq is not None and m.TYPE != MsgType.HELLO:
            gap = (m.seq - self._last_seq - 1) & 0xFFFF
            if gap >= 0x8000:  # behind the last one: duplicate or reordered, not a loss
                st.seq_reorders += 1
                out.append(m)
                return
            if gap:
                st.seq_gaps += gap
                st.seq_gap_events += 1
        self._last_seq = m.seq
        out.append(m)


__all__ = [
    "MsgType", "SampleFormat", "Role", "OutputKind", "ErrorCode", "Message", "Hello", "Heartbeat",
    "SensorFrame", "Output", "Telemetry", "SetBudget", "BudgetReport", "Error", "encode", "decode_frame",
    "Encoder", "Decoder", "DecoderStats", "MESSAGE_CLASSES", "SEQ_NONE", "MAX_PAYLOAD", "MAX_ENCODED",
    "UnknownTypeError", "CAP_SENSOR_F32", "CAP_SENSOR_I16", "CAP_TELEMETRY", "CAP_BUDGET", "CAP_OUTPUT",
]
