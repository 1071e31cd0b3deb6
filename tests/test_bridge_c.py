"""The C99 reference (firmware_bridge/c) is compiled with the host compiler and held to the Python
side both ways: golden vectors, C-encoded frames decoded by Python, Python streams decoded by C."""

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge import faults, golden
from firmware_bridge.protocol import Decoder, Heartbeat, Output, SensorFrame, Telemetry, encode

C_DIR = Path(golden.__file__).parent / "c"
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
pytestmark = pytest.mark.skipif(
    CC is None, reason="no C compiler (cc/gcc/clang) on PATH; set CC to run the C reference tests")


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    exe = tmp_path_factory.mktemp("c") / "bridge_cli"
    cmd = [CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-o", str(exe),
           str(C_DIR / "essm_bridge.c"), str(C_DIR / "bridge_cli.c")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"

    def run(*args, stdin=b""):
        p = subprocess.run([str(exe), *args], input=stdin, capture_output=True, timeout=30)
        assert p.returncode == 0, p.stderr.decode()
        return p.stdout

    return run


def test_header_has_no_malloc_and_no_stdio():
    src = (C_DIR / "essm_bridge.c").read_text() + (C_DIR / "essm_bridge.h").read_text()
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)  # comments may say "no malloc"
    for pattern in (r"\bmalloc\s*\(", r"\bfree\s*\(", r"<stdio\.h>", r"printf\s*\("):
        assert not re.search(pattern, src), pattern


def test_c_vectors(cli):
    for line in golden.build()["vectors.txt"].decode().splitlines():
        kind, hx, want = line.split()
        if hx == "-":
            hx = ""
        assert cli(kind, hx).decode().strip() == (want if want != "-" else ""), line


def test_c_encodes_golden_messages_byte_for_byte(cli):
    lines = golden.build()["messages.txt"].decode().splitlines()
    want = b"".join(bytes.fromhex(line.split()[5]) for line in lines)
    assert cli("encode", stdin="\n".join(lines).encode() + b"\n") == want


def test_c_decodes_golden_stream_like_python(cli):
    files = golden.build()
    assert cli("decode", stdin=files["stream.bin"]) == files["stream_expected.txt"]


def test_python_stream_decoded_by_c_equals_python_decoder(cli):
    # A fresh seeded stream (not the committed one): every fault kind, random sizes up to the max.
    rng = random.Random(99)
    out = bytearray()
    for i in range(400):
        m = rng.choice([
            SensorFrame(samples=np.array([rng.uniform(-5, 5) for _ in range(rng.randrange(0, 511))], np.float32)),
            SensorFrame(samples=np.array([rng.randrange(-30000, 30000) for _ in range(rng.randrange(0, 1019))],
                                         np.int16)),
            Output(values=np.zeros(rng.randrange(0, 20), np.float32), ref_seq=i),
            Telemetry(energy_uj=rng.randrange(1 << 64)), Heartbeat(token=i)])
        frame = encode(m, seq=(i * 3) & 0xFFFF, timestamp_us=i)
        k = rng.random()
        if k < 0.3:
            out += faults.CORRUPTORS[rng.choice(list(faults.CORRUPTORS))](frame, rng)
        elif k < 0.35:
            out += faults.garbage(rng, rng.randrange(1, 3000)) + frame
        else:
            out += frame
    out = bytes(out)
    assert cli("decode", stdin=out).decode() == golden.decode_report(out)


def test_c_encoded_frames_decode_in_python(cli):
    rng = random.Random(5)
    msgs = [Output(values=np.array([rng.uniform(-1, 1) for _ in range(rng.randrange(0, 100))], np.float32),
                   ref_seq=rng.randrange(65536), seq=i, timestamp_us=rng.randrange(1 << 32), flags=i % 3)
            for i in range(200)]
    lines = [f"{int(m.TYPE)} {m.flags} {m.seq} {m.timestamp_us} {m.pack_payload().hex() or '-'}" for m in msgs]
    wire = cli("encode", stdin=("\n".join(lines) + "\n").encode())
    d = Decoder()
    assert d.feed(wire) == msgs and d.stats.resyncs == 0


def test_c_decoder_is_memory_safe_under_sanitizers(tmp_path):
    """ASan + UBSan build fed the golden stream, random bytes and a long run without delimiters."""
    exe = tmp_path / "bridge_cli_san"
    cmd = [CC, "-std=c99", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           "-o", str(exe), str(C_DIR / "essm_bridge.c"), str(C_DIR / "bridge_cli.c")]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip(f"{CC} cannot build with -fsanitize=address,undefined here")
    rng = random.Random(11)
    junk = bytes(rng.randrange(256) for _ in range(200_000))
    run = bytes(rng.randrange(1, 256) for _ in range(50_000))
    for data in (golden.build()["stream.bin"], junk, run + b"\x00" + run):
        p = subprocess.run([str(exe), "decode"], input=data, capture_output=True, timeout=60,
                           env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
        assert p.returncode == 0, p.stderr.decode()[-2000:]
        assert p.stdout.decode() == golden.decode_report(data)
    lines = golden.build()["messages.txt"]
    p = subprocess.run([str(exe), "encode"], input=lines, capture_output=True, timeout=60,
                       env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert p.stdout == b"".join(bytes.fromhex(line.split()[5]) for line in lines.decode().splitlines())


@pytest.mark.parametrize("line, why", [
    (b"3 0 1 2 " + b"ab" * 2100 + b"\n", b"too long"),      # 4200 hex digits into a 4104-byte field
    (b"3 0 1 2 " + b"a" * 20_000 + b"\n", b"longer than"),  # a line longer than the line buffer
    (b"3 0 1 2 abc\n", b"hex digits"),                      # odd length
    (b"3 0 1 2 zz\n", b"hex digits"),                       # not hex
])
def test_c_cli_encode_rejects_oversized_and_bad_hex_under_sanitizers(san_exe, line, why):
    """#11 item 8: bridge_cli copied an unbounded %s into a 4104-byte buffer (ASan: global-buffer-overflow).
    Now every bad line is an error on stderr with exit 1, under ASan + UBSan."""
    exe = san_exe
    ok = b"3 0 1 2 0102\n"
    p = subprocess.run([str(exe), "encode"], input=ok + line, capture_output=True, timeout=60,
                       env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert b"Sanitizer" not in p.stderr, p.stderr.decode()[-2000:]
    assert p.returncode == 1 and why in p.stderr, p.stderr.decode()[-2000:]
    assert p.stdout.endswith(b"\x00") and len(p.stdout) > 15           # the good line before it was encoded


@pytest.fixture(scope="module")
def san_exe(tmp_path_factory):
    exe = tmp_path_factory.mktemp("san") / "bridge_cli_san"
    cmd = [CC, "-std=c99", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           "-o", str(exe), str(C_DIR / "essm_bridge.c"), str(C_DIR / "bridge_cli.c")]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip(f"{CC} cannot build with -fsanitize=address,undefined here")
    return exe
