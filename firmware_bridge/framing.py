"""Byte-level framing: COBS stuffing, CRC-32C and the 11-byte header. No messages, no I/O.

Wire frame (see docs/PROTOCOL.md)::

    COBS( header(11) | payload(len) | crc32c(header|payload) as u32 LE ) | 0x00

The fast paths use the ``cobs`` and ``crcmod`` (crcmod-plus) C extensions when importable; the
plain ``*_ref`` functions beside them have the same signatures, are what the C reference
mirrors, and the tests hold the fast paths to them.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from .errors import ProtocolError

log = logging.getLogger(__name__)


# Why a received segment was rejected; ``reason`` names the Decoder counter it increments.
class OversizeError(ProtocolError):
    """More than MAX_ENCODED bytes without a delimiter."""

    reason = "oversize"


class CobsError(ProtocolError):
    """The segment is not valid COBS (a zero byte inside, or a block running past the end)."""

    reason = "cobs_errors"


class ShortFrameError(ProtocolError):
    """Fewer bytes than a header and a CRC."""

    reason = "short"


class CrcError(ProtocolError):
    """The CRC-32C of a frame does not match its contents."""

    reason = "crc_errors"


class VersionError(ProtocolError):
    """A frame carries a protocol version this side does not speak."""

    reason = "bad_version"


class HeaderError(ProtocolError):
    """The header's payload length disagrees with the frame, or reserved flag bits are set."""

    reason = "bad_header"

PROTOCOL_VERSION = 1
DELIMITER = 0x00
HEADER = struct.Struct("<BBBHIH")  # version, type, flags, seq, timestamp_us, payload_len
HEADER_SIZE = HEADER.size  # 11
CRC_SIZE = 4
MAX_PAYLOAD = 2048  # bytes; the C reference's EB_MAX_PAYLOAD must equal this
MAX_RAW = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE  # 2063: largest unstuffed frame
# COBS adds one code byte per started block of 254 data bytes (plus one): upper bound.
MAX_ENCODED = MAX_RAW + MAX_RAW // 254 + 1  # 2072: largest stuffed frame, delimiter excluded

FLAG_ACK_REQUEST = 0x01  # sender asks the peer to answer this frame right away
FLAG_ACK = 0x02  # this frame answers a FLAG_ACK_REQUEST frame
FLAGS_KNOWN = FLAG_ACK_REQUEST | FLAG_ACK


# ----------------------------------------------------------------------------- CRC-32C
_CRC32C_POLY_REFLECTED = 0x82F63B78


def crc32c_ref(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), bitwise; ``crc`` continues a previous call (0 to start)."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC32C_POLY_REFLECTED & -(crc & 1))
    return crc ^ 0xFFFFFFFF


try:  # crcmod-plus ships a C extension; mkCrcFun('crc-32c') is the same CRC as crc32c_ref
    import crcmod.predefined as _crcmod_predefined

    _crc32c_fast = _crcmod_predefined.mkCrcFun("crc-32c")

    def crc32c(data: bytes, crc: int = 0) -> int:
        """CRC-32C (Castagnoli) via crcmod-plus; same signature and result as ``crc32c_ref``."""
        return _crc32c_fast(data, crc)

except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    log.debug("crcmod not importable; using the pure-Python CRC-32C")
    crc32c = crc32c_ref


# ----------------------------------------------------------------------------- COBS
def cobs_encode_ref(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: output has no 0x00; the delimiter is not appended."""
    out = bytearray()
    block = bytearray()
    for i, b in enumerate(data):
        if b == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(b)
            if len(block) == 254:  # a full block: code 0xFF means "254 bytes, no implied zero"
                out.append(0xFF)
                out += block
                block.clear()
                if i == len(data) - 1:  # input ends on a full block: no empty trailing block
                    return bytes(out)
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode_ref(data: bytes) -> bytes:
    """Inverse of ``cobs_encode_ref``; raises ProtocolError on a zero byte or a short block."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise CobsError(f"COBS: zero byte inside a frame at offset {i}, expected 1..255")
        end = i + code
        if end > n:
            raise CobsError(f"COBS: block code {code} at offset {i} runs past the end ({n} bytes)")
        block = data[i + 1 : end]
        if 0 in block:
            raise CobsError(f"COBS: zero byte inside a frame at offset {i + 1 + block.index(0)}")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


try:
    from cobs import cobs as _cobs

    def cobs_encode(data: bytes) -> bytes:
        """COBS-encode via the ``cobs`` package (C extension); same result as ``cobs_encode_ref``."""
        return _cobs.encode(data)

    def cobs_decode(data: bytes) -> bytes:
        """COBS-decode via the ``cobs`` package; raises ProtocolError like ``cobs_decode_ref``."""
        try:
            return _cobs.decode(data)
        except _cobs.DecodeError as e:
            raise CobsError(f"COBS: {e}") from None

except ImportError:  # pragma: no cover
    log.debug("cobs not importable; using the pure-Python COBS")
    cobs_encode = cobs_encode_ref
    cobs_decode = cobs_decode_ref


# ----------------------------------------------------------------------------- header + frame
@dataclass(frozen=True)
class Header:
    """The 11-byte frame header, little-endian, packed without padding."""

    version: int
    msg_type: int
    flags: int
    seq: int  # u16, per sender, wraps; gaps mean lost frames
    timestamp_us: int  # u32 sender clock in microseconds, wraps every ~71.6 min
    length: int  # payload bytes, 0..MAX_PAYLOAD


def pack_frame(msg_type: int, payload: bytes, *, seq: int, timestamp_us: int = 0, flags: int = 0,
               version: int = PROTOCOL_VERSION) -> bytes:
    """Header + payload + CRC, COBS-stuffed, with the trailing 0x00 delimiter."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    if not 0 <= seq <= 0xFFFF:
        raise ProtocolError(f"seq={seq} is not a u16 (0..65535)")
    raw = HEADER.pack(version, msg_type, flags, seq, timestamp_us & 0xFFFFFFFF, len(payload)) + payload
    raw += struct.pack("<I", crc32c(raw))
    return cobs_encode(raw) + b"\x00"


def unpack_frame(segment: bytes) -> tuple[Header, bytes]:
    """One delimiter-free stuffed segment -> (Header, payload); ProtocolError names the fault.

    Checks, in this order: size bound, COBS, minimum length, CRC, version, declared length, flags.
    Message-type and payload checks belong to ``protocol``.
    """
    if len(segment) > MAX_ENCODED:
        raise OversizeError(f"oversized frame: {len(segment)} stuffed bytes > MAX_ENCODED={MAX_ENCODED}")
    raw = cobs_decode(segment)
    if len(raw) < HEADER_SIZE + CRC_SIZE:
        raise ShortFrameError(f"short frame: {len(raw)} bytes < {HEADER_SIZE + CRC_SIZE}")
    body, (crc_rx,) = raw[:-CRC_SIZE], struct.unpack_from("<I", raw, len(raw) - CRC_SIZE)
    crc = crc32c(body)
    if crc != crc_rx:
        raise CrcError(f"CRC mismatch: received 0x{crc_rx:08x}, computed 0x{crc:08x}")
    h = Header(*HEADER.unpack_from(body))
    if h.version != PROTOCOL_VERSION:
        raise VersionError(f"protocol version {h.version}, expected {PROTOCOL_VERSION}")
    if h.length != len(body) - HEADER_SIZE:
        raise HeaderError(f"header says {h.length} payload bytes, frame carries {len(body) - HEADER_SIZE}")
    if h.flags & ~FLAGS_KNOWN:
        raise HeaderError(f"reserved flag bits set: 0x{h.flags:02x}, known 0x{FLAGS_KNOWN:02x}")
    return h, body[HEADER_SIZE:]

