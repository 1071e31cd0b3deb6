"""Golden vectors shared by the Python side and the C reference (``firmware_bridge/c/golden/``).

    python -m firmware_bridge.golden            # rewrite the committed files
    python -m firmware_bridge.golden --check    # exit 1 if they differ from a fresh build

Everything is derived from SEED with ``random.Random`` (stable across Python versions), so the
files are reproducible byte for byte; tests/test_bridge_golden.py checks the committed files
equal a fresh ``build()``. Files:

* ``vectors.txt``  - ``crc32c <hex> <crc>`` and ``cobs <hex> <stuffed hex>`` lines.
* ``messages.txt`` - ``<type> <flags> <seq> <timestamp_us> <payload hex|-> <frame hex>``: the first
  five columns are what ``bridge_cli encode`` reads; the last is the wire frame both sides must emit.
* ``stream.bin``   - valid frames interleaved with bit flips, dropped bytes, truncations, garbage
  bursts and an oversized run; ``stream_expected.txt`` is what ``bridge_cli decode`` must print
  for it (accepted frames, then the counters).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

from . import faults
from .framing import MAX_ENCODED, MAX_PAYLOAD, cobs_encode_ref, crc32c_ref, pack_frame
from .protocol import (BudgetReport, Decoder, Error, Heartbeat, Hello, Message, Output, Role, SampleFormat,
                       SensorFrame, SetBudget, Telemetry, encode)

SEED = 20260523
GOLDEN_DIR = Path(__file__).parent / "c" / "golden"


def _messages(rng: random.Random) -> list[Message]:
    f32 = lambda n: np.array([rng.uniform(-10, 10) for _ in range(n)], dtype=np.float32)  # noqa: E731
    i16 = lambda n: np.array([rng.randrange(-32768, 32768) for _ in range(n)], dtype=np.int16)  # noqa: E731
    return [
        Hello(role=Role.DEVICE, sample_format=SampleFormat.F32, channels=6, frame_rate_hz=1000.0,
              capabilities=0x1F, fw_version=0x010203, name="essm-emu"),
        Hello(),
        Heartbeat(token=0xDEADBEEF, uptime_ms=123456),
        Heartbeat(flags=1, token=1),
        SensorFrame(samples=f32(6), channels=6),
        SensorFrame(samples=i16(160), channels=1, scale=1 / 32768),
        SensorFrame(samples=np.zeros(0, np.float32)),
        SensorFrame(samples=np.zeros(64, np.float32)),  # all zeros: one COBS code byte per zero byte
        SensorFrame(samples=np.full(127, 1.5, np.float32)),  # long runs without zeros: 254-byte blocks
        SensorFrame(samples=i16((MAX_PAYLOAD - 8) // 2), channels=4 if ((MAX_PAYLOAD - 8) // 2) % 4 == 0 else 1),
        Output(values=f32(3), kind=1, ref_seq=41),
        Output(),
        Telemetry(bus_voltage_v=5.02, current_a=0.41, power_w=2.06, energy_uj=(1 << 40) + 12345, temperature_c=41.5),
        SetBudget(k=32),
        BudgetReport(k=32, ref_seq=7, power_w=3.5),
        Error(code=3, ref_seq=9, text="bad payload: count=7"),
    ]


def build(seed: int = SEED) -> dict[str, bytes]:
    """All golden files as {name: bytes}; deterministic in ``seed``."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}

    vec = []
    for data in [b"", b"123456789", b"\x00", b"\x00\x00", bytes(range(1, 255)), bytes(range(1, 256)),
                 bytes(range(256)), *(rng.randbytes(rng.randrange(1, 600)) for _ in range(6))]:
        hx = data.hex() or "-"
        vec.append(f"crc32c {hx} {crc32c_ref(data):08x}")
        vec.append(f"cobs {hx} {cobs_encode_ref(data).hex()}")
    files["vectors.txt"] = ("\n".join(vec) + "\n").encode()

    lines = []
    for i, m in enumerate(_messages(rng)):
        m.seq, m.timestamp_us = (i * 4099) & 0xFFFF, rng.randrange(1 << 32)
        payload = m.pack_payload()
        lines.append(f"{int(m.TYPE)} {m.flags} {m.seq} {m.timestamp_us} {payload.hex() or '-'} {encode(m).hex()}")
    files["messages.txt"] = ("\n".join(lines) + "\n").encode()

    stream = bytearray(b"\x00")
    seq = 65500  # wraps through 0 on the way
    msgs = _messages(rng)
    for i in range(200):
        m = msgs[rng.randrange(len(msgs))]
        frame = encode(m, seq=seq, timestamp_us=i * 1000)
        seq = (seq + 1) & 0xFFFF
        r = rng.random()
        if r < 0.08:
            stream += faults.bitflip(frame, rng)
        elif r < 0.14:
            stream += faults.drop_byte(frame, rng)
        elif r < 0.20:
            stream += faults.truncate(frame, rng)
        elif r < 0.24:
            stream += faults.garbage(rng, rng.randrange(1, 80)) + frame
        elif r < 0.25:
            stream += faults.garbage(rng, MAX_ENCODED + rng.randrange(1, 300)) + frame  # oversized run
        elif r < 0.27:  # CRC-valid but wrong: unknown type, other version, reserved flag, bad length
            bad = rng.choice([pack_frame(0x55, b"abc", seq=seq), pack_frame(0x02, bytes(8), seq=seq, version=2),
                              pack_frame(0x02, bytes(8), seq=seq, flags=0x80), pack_frame(0x02, bytes(7), seq=seq)])
            seq = (seq + 1) & 0xFFFF
            stream += bad + frame
        else:
            stream += frame
    files["stream.bin"] = bytes(stream)
    files["stream_expected.txt"] = decode_report(bytes(stream)).encode()
    return files


def decode_report(stream: bytes) -> str:
    """What ``bridge_cli decode`` prints for ``stream``, computed with the Python Decoder."""
    d = Decoder()
    out = []
    for m in d.feed(stream):
        payload = m.pack_payload()
        out.append(f"F {int(m.TYPE)} {m.flags} {m.seq} {m.timestamp_us} {payload.hex() or '-'}")
    s = d.stats
    out.append(f"S frames={s.frames} resyncs={s.resyncs} bytes_discarded={s.bytes_discarded} "
               f"seq_gaps={s.seq_gaps} seq_reorders={s.seq_reorders} oversize={s.oversize} "
               f"cobs_errors={s.cobs_errors} short={s.short} crc_errors={s.crc_errors} bad_version={s.bad_version} "
               f"bad_header={s.bad_header} unknown_type={s.unknown_type} bad_payload={s.bad_payload}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m firmware_bridge.golden", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=GOLDEN_DIR, help="directory to write (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    a = ap.parse_args(argv)
    files = build()
    if a.check:
        bad = [n for n, b in files.items() if not (a.out / n).exists() or (a.out / n).read_bytes() != b]
        print("golden vectors differ: " + ", ".join(bad) if bad else "golden vectors up to date")
        return 1 if bad else 0
    a.out.mkdir(parents=True, exist_ok=True)
    for n, b in files.items():
        (a.out / n).write_bytes(b)
    print(f"wrote {len(files)} files to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
