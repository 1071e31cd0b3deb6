"""Fault injection on wire frames, shared by the emulator, the golden-vector script and the tests.

Every function takes one complete frame (stuffed body + 0x00) and returns the bytes to send in
its place. The trailing delimiter is always kept, so a fault costs exactly that frame and the
receiver resyncs at its 0x00; ``segments()`` says how many segments the receiver will reject.
Randomness comes from a ``random.Random`` (stable across Python versions, unlike numpy streams).
"""

from __future__ import annotations

import random

FAULT_KINDS = ("bitflip", "drop_byte", "truncate", "garbage")


def bitflip(frame: bytes, rng: random.Random) -> bytes:
    """Flip one random bit of the stuffed body (may create a 0x00 and split the frame in two)."""
    body = bytearray(frame[:-1])
    i = rng.randrange(len(body))
    body[i] ^= 1 << rng.randrange(8)
    return bytes(body) + b"\x00"


def drop_byte(frame: bytes, rng: random.Random) -> bytes:
    """Lose one random byte of the stuffed body (as a UART overrun does)."""
    body = frame[:-1]
    i = rng.randrange(len(body))
    return body[:i] + body[i + 1 :] + b"\x00"


def truncate(frame: bytes, rng: random.Random) -> bytes:
    """Cut the body short, keeping at least one byte, then the delimiter."""
    body = frame[:-1]
    return body[: rng.randrange(1, len(body))] + b"\x00"


def garbage(rng: random.Random, n: int) -> bytes:
    """A burst of n non-zero noise bytes closed by 0x00: one rejected segment, no frame lost."""
    return bytes(rng.randrange(1, 256) for _ in range(n)) + b"\x00"


def segments(data: bytes) -> int:
    """Number of non-empty 0x00-delimited segments in data (what a receiver will try to decode)."""
    return sum(1 for s in data.split(b"\x00") if s)


CORRUPTORS = {"bitflip": bitflip, "drop_byte": drop_byte, "truncate": truncate}
