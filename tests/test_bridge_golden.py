"""The committed golden vectors equal a fresh run of the seeded script, and Python satisfies them."""

import pytest

from firmware_bridge import framing, golden
from firmware_bridge.protocol import Decoder, decode_frame

FILES = golden.build()


@pytest.mark.parametrize("name", sorted(FILES))
def test_committed_golden_files_equal_regenerated(name):
    path = golden.GOLDEN_DIR / name
    assert path.exists(), f"{path} missing: run `python -m firmware_bridge.golden`"
    assert path.read_bytes() == FILES[name], f"{name} is stale: run `python -m firmware_bridge.golden`"


def test_golden_build_is_deterministic():
    assert golden.build() == FILES
    assert golden.build(seed=golden.SEED + 1)["stream.bin"] != FILES["stream.bin"]


def test_vectors_hold_for_python():
    for line in FILES["vectors.txt"].decode().splitlines():
        kind, hx, want = line.split()
        data = b"" if hx == "-" else bytes.fromhex(hx)
        if kind == "crc32c":
            assert f"{framing.crc32c(data):08x}" == want
        else:
            assert framing.cobs_encode(data).hex() == want


def test_messages_decode_to_their_columns():
    for line in FILES["messages.txt"].decode().splitlines():
        typ, flags, seq, ts, payload, frame = line.split()
        m = decode_frame(bytes.fromhex(frame)[:-1])
        assert (int(m.TYPE), m.flags, m.seq, m.timestamp_us) == (int(typ), int(flags), int(seq), int(ts))
        assert (m.pack_payload().hex() or "-") == payload


def test_stream_has_every_fault_kind_and_python_matches_expected():
    d = Decoder()
    d.feed(FILES["stream.bin"])
    s = d.stats
    assert min(s.crc_errors, s.cobs_errors, s.oversize, s.bad_version, s.bad_header, s.bad_payload, s.seq_gaps) > 0
    assert golden.decode_report(FILES["stream.bin"]) == FILES["stream_expected.txt"].decode()


def test_check_mode(tmp_path, capsys):
    assert golden.main(["--out", str(tmp_path)]) == 0
    assert golden.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "stream.bin").write_bytes(b"\x00")
    assert golden.main(["--out", str(tmp_path), "--check"]) == 1
