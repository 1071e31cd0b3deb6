"""Framing and message round trips (hypothesis), error family, and a fuzz test of the Decoder."""

import random
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import firmware_bridge.framing as framing
from firmware_bridge import faults
from firmware_bridge.errors import BridgeError, ProtocolError
from firmware_bridge.framing import MAX_ENCODED, MAX_PAYLOAD, pack_frame
from firmware_bridge.protocol import (BudgetReport, Decoder, Error, Heartbeat, Hello, MsgType, Output, SensorFrame,
                                      SetBudget, Telemetry, decode_frame, encode)

# ----------------------------------------------------------------------------- strategies
u8, u16, u32 = st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
f32 = st.floats(width=32)  # NaN and inf included: they must survive the trip too


def _utf8_max(n):
    return st.text(max_size=n).filter(lambda s: len(s.encode()) <= n and "\x00" not in s)


@st.composite
def sensor_frames(draw):
    dtype = draw(st.sampled_from([np.float32, np.int16]))
    ch = draw(st.integers(1, 8))
    n = draw(st.integers(0, 40)) * ch
    return SensorFrame(samples=draw(hnp.arrays(dtype, n)), channels=ch, scale=draw(f32))


messages = st.one_of(
    st.builds(Hello, role=u8, proto_min=u8, proto_max=u8, sample_format=u8, channels=u16, max_payload=u16,
              frame_rate_hz=f32, capabilities=u32, fw_version=u32, name=_utf8_max(16)),
    st.builds(Heartbeat, token=u32, uptime_ms=u32),
    sensor_frames(),
    st.builds(Output, values=hnp.arrays(np.float32, st.integers(0, 64)), kind=u8, ref_seq=u16),
    st.builds(Telemetry, bus_voltage_v=f32, current_a=f32, power_w=f32, energy_uj=st.integers(0, 2**64 - 1),
              temperature_c=f32),
    st.builds(SetBudget, k=u16),
    st.builds(BudgetReport, k=u16, ref_seq=u16, power_w=f32),
    st.builds(Error, code=u16, ref_seq=u16, text=_utf8_max(64)),
)
headers = st.fixed_dictionaries(dict(seq=u16, timestamp_us=u32, flags=st.sampled_from([0, 1, 2, 3])))


# ----------------------------------------------------------------------------- CRC / COBS
def test_crc32c_check_value():
    # The catalogue check value of CRC-32C over "123456789".
    assert framing.crc32c(b"123456789") == framing.crc32c_ref(b"123456789") == 0xE3069283


# Runs of 250..510 non-zero bytes hit the 254-byte block boundary that plain st.binary rarely reaches.
_runs = st.binary(min_size=250, max_size=510).map(lambda b: b.replace(b"\x00", b"\x01"))
_cobs_inputs = st.one_of(st.binary(max_size=600),
                         st.lists(st.one_of(st.just(b"\x00"), st.binary(max_size=5), _runs), max_size=4).map(b"".join))


@settings(deadline=None)  # timing varies on a loaded shared CI box
@given(_cobs_inputs)
def test_crc_and_cobs_fast_paths_equal_refs(data):
    assert framing.crc32c(data) == framing.crc32c_ref(data)
    enc = framing.cobs_encode(data)
    assert enc == framing.cobs_encode_ref(data)
    assert 0 not in enc and len(enc) <= len(data) + len(data) // 254 + 1
    assert framing.cobs_decode(enc) == framing.cobs_decode_ref(enc) == data


@settings(deadline=None)  # timing varies on a loaded shared CI box
@given(st.binary(max_size=300))
def test_cobs_decoders_agree_on_arbitrary_input(data):
    # Both reject (ProtocolError) or both return the same bytes: the ref is what C mirrors.
    outs = []
    for f in (framing.cobs_decode, framing.cobs_decode_ref):
        try:
            outs.append(f(data))
        except ProtocolError:
            outs.append("error")
    assert outs[0] == outs[1]


def test_pure_python_fallback_roundtrip(monkeypatch):
    # Without the cobs / crcmod packages the refs take over; the wire bytes must not change.
    m = SensorFrame(samples=np.arange(300, dtype=np.float32))
    wire = encode(m, seq=5)
    monkeypatch.setattr(framing, "crc32c", framing.crc32c_ref)
    monkeypatch.setattr(framing, "cobs_encode", framing.cobs_encode_ref)
    monkeypatch.setattr(framing, "cobs_decode", framing.cobs_decode_ref)
    assert encode(m, seq=5) == wire
    assert Decoder().feed(wire) == [SensorFrame(samples=m.samples, seq=5)]


def test_header_layout_is_little_endian_and_11_bytes():
    raw = framing.cobs_decode(pack_frame(0x10, b"", seq=0x1234, timestamp_us=0xA1B2C3D4, flags=1)[:-1])
    assert len(raw) == 11 + 4
    assert raw[:11] == bytes([1, 0x10, 1, 0x34, 0x12, 0xD4, 0xC3, 0xB2, 0xA1, 0, 0])
    assert struct.unpack("<I", raw[11:])[0] == framing.crc32c(raw[:11])


# ----------------------------------------------------------------------------- messages
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, headers)
def test_encode_decode_roundtrip(m, h):
    wire = encode(m, **h)
    assert wire[-1] == 0 and 0 not in wire[:-1]
    got = decode_frame(wire[:-1])
    expect = type(m)(**{**m.__dict__, **h})
    assert got == expect
    assert Decoder().feed(wire) == [expect]
    assert encode(got) == wire  # decode is the exact inverse of encode


def test_messages_default_every_field():
    for cls in (Hello, Heartbeat, SensorFrame, Output, Telemetry, SetBudget, BudgetReport, Error):
        m = cls()
        assert Decoder().feed(encode(m)) == [m]


def test_int16_frames_scale_to_float32():
    m = SensorFrame(samples=np.array([-32768, 0, 16384], np.int16), scale=1 / 32768)
    [got] = Decoder().feed(encode(m))
    np.testing.assert_array_equal(got.as_float32(), np.array([-1.0, 0.0, 0.5], np.float32))
    assert got.as_float32().dtype == np.float32


def test_error_family():
    assert issubclass(ProtocolError, BridgeError) and issubclass(ProtocolError, ValueError)
    assert issubclass(BridgeError, OSError)


@pytest.mark.parametrize("bad, match", [
    (lambda: encode(SensorFrame(samples=np.zeros(3, np.float64))), "float64"),
    (lambda: encode(SensorFrame(samples=np.zeros(5, np.float32), channels=2)), "channels=2"),
    (lambda: encode(Output(values=np.zeros(MAX_PAYLOAD, np.float32))), "exceeds MAX_PAYLOAD"),
    (lambda: encode(Heartbeat(), seq=70000), "seq=70000"),
    (lambda: encode(Hello(name="x" * 17)), "17 bytes"),
    (lambda: encode("not a message"), "str"),
    (lambda: encode(SetBudget(k=-1)), "k=-1"),
])
def test_encode_rejects_bad_values_and_names_them(bad, match):
    with pytest.raises(ProtocolError, match=match):
        bad()


@pytest.mark.parametrize("frame, reason", [
    (pack_frame(0x55, b"abc", seq=0), "unknown_type"),
    (pack_frame(MsgType.HEARTBEAT, bytes(8), seq=0, version=2), "bad_version"),
    (pack_frame(MsgType.HEARTBEAT, bytes(8), seq=0, flags=0x80), "bad_header"),
    (pack_frame(MsgType.HEARTBEAT, bytes(7), seq=0), "bad_payload"),
    (pack_frame(MsgType.SENSOR_FRAME, bytes([1, 1, 9, 0]) + bytes(4 + 4 * 8), seq=0), "bad_payload"),
    (b"\x05\x01\x02\x03\x00", "cobs_errors"),
    (framing.cobs_encode(b"\x01" * 8) + b"\x00", "short"),
    (b"\x07" * (MAX_ENCODED + 5) + b"\x00", "oversize"),
])
def test_decoder_rejects_and_counts(frame, reason):
    d = Decoder()
    ok = encode(Heartbeat(), seq=1)
    assert d.feed(frame + ok) == [Heartbeat(seq=1)]  # the next good frame survives
    assert getattr(d.stats, reason) == 1 and d.stats.resyncs == 1, d.stats


def test_decoder_counts_crc_error_and_seq_gaps():
    d = Decoder()
    raw = bytearray(framing.cobs_decode(encode(Heartbeat(token=1), seq=10)[:-1]))
    raw[12] ^= 0x10  # a payload bit: COBS still parses, only the CRC can tell
    wire = framing.cobs_encode(bytes(raw)) + b"\x00"
    out = d.feed(encode(Heartbeat(), seq=9) + bytes(wire) + encode(Heartbeat(), seq=11) + encode(Heartbeat(), seq=15))
    assert [m.seq for m in out] == [9, 11, 15]
    assert (d.stats.crc_errors, d.stats.seq_gaps, d.stats.seq_gap_events) == (1, 4, 2)


def test_seq_wraps_and_hello_restarts_tracking():
    d = Decoder()
    d.feed(encode(Heartbeat(), seq=0xFFFF) + encode(Heartbeat(), seq=0) + encode(Hello(), seq=0)
           + encode(Heartbeat(), seq=1) + encode(Heartbeat(), seq=1))
    assert d.stats.seq_gaps == 0 and d.stats.seq_reorders == 1


# ----------------------------------------------------------------------------- fuzz
KINDS = ["ok"] * 4 + ["bitflip", "drop_byte", "truncate", "garbage", "delimiter"]


def _corrupted_stream(items, rng):
    """Build a stream; return (bytes, indices of frames that must be recovered)."""
    stream = bytearray(rng.randbytes(rng.randrange(0, 40)))  # starts mid-frame, as after opening a port
    spans = []
    for i, (m, kind) in enumerate(items):
        frame = encode(m, seq=i)
        if kind == "ok":
            spans.append((i, len(stream), len(stream) + len(frame)))
            stream += frame
        elif kind == "garbage":
            stream += faults.garbage(rng, rng.randrange(1, 3 * MAX_ENCODED // 2))  # some are oversized
            spans.append((i, len(stream), len(stream) + len(frame)))
            stream += frame
        elif kind == "delimiter":  # the 0x00 itself is hit: this frame and the next merge
            stream += frame[:-1] + bytes([rng.randrange(1, 256)])
        else:
            stream += faults.CORRUPTORS[kind](frame, rng)
    # A frame is recoverable iff it sits intact between two delimiters (or at the stream start).
    keep = [i for i, a, b in spans if (a == 0 or stream[a - 1] == 0) and stream[b - 1] == 0]
    return bytes(stream), keep


def _feed_chunked(d, stream, rng):
    out = []
    i = 0
    while i < len(stream):
        n = rng.choice([1, 2, 7, 64, 1000, 5000])
        out += d.feed(stream[i:i + n])
        assert d.pending <= d.max_encoded
        i += n
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(messages, st.sampled_from(KINDS)), max_size=25), st.integers(0, 2**32 - 1))
def test_fuzz_corrupt_frames_rejected_valid_frames_recovered(items, seed):
    rng = random.Random(seed)
    stream, keep = _corrupted_stream(items, rng)
    d = Decoder()
    got = _feed_chunked(d, stream, rng)
    assert got == [type(m)(**{**m.__dict__, "seq": i}) for i, (m, _) in enumerate(items) if i in keep]


def test_fuzz_large_seeded_stream():
    # 3000 frames, ~45 % of them hit: the statistics behind the property test, at scale.
    rng = random.Random(1234)
    kinds = ["ok"] * 5 + KINDS
    items = [(SensorFrame(samples=np.array([rng.uniform(-1, 1) for _ in range(rng.randrange(1, 40))], np.float32)),
              rng.choice(kinds)) for _ in range(3000)]
    stream, keep = _corrupted_stream(items, rng)
    d = Decoder()
    got = _feed_chunked(d, stream, rng)
    assert len(keep) > 1000 and [m.seq for m in got] == keep
    assert d.stats.frames == len(keep) and d.stats.resyncs > 0.3 * (len(items) - len(keep))


@settings(deadline=None)  # timing varies on a loaded shared CI box
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(data):
    d = Decoder()
    assert d.feed(data) == [] and d.feed(data + b"\x00") == []
    assert d.pending <= MAX_ENCODED


def test_memory_stays_bounded_without_delimiters():
    rng = random.Random(7)
    d = Decoder()
    junk = bytes(rng.randrange(1, 256) for _ in range(64 * 1024))
    tracemalloc.start()
    for _ in range(64):  # 4 MiB with no 0x00 at all
        d.feed(junk)
        assert d.pending <= MAX_ENCODED
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20, peak
    assert d.stats.oversize == 1 and d.feed(b"\x00" + encode(Heartbeat())) == [Heartbeat()]
