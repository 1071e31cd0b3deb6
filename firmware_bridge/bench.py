"""Throughput and latency of the bridge; prints a Markdown report (the numbers in docs/PROTOCOL.md).

    python -m firmware_bridge.bench              # ~40 s
    python -m firmware_bridge.bench --quick      # ~10 s, fewer points

1. codec: encode / Decoder.feed on this CPU, no I/O (fast path: cobs + crcmod-plus C extensions;
   pure-Python refs for comparison);
2. pty throughput device -> host: the emulator in a child process (``python -m
   firmware_bridge.emulator``) streams at a requested rate; the host Link counts what arrives and
   any loss (seq gaps, queue drops);
3. latency over the pty, emulator in a child process: HEARTBEAT ping round trips (host -> device ->
   host), and the closed loop sensor frame -> host -> OUTPUT as the emulator timestamps it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from . import framing
from .adapters import SerialFrameSource, SerialOutputSink
from .link import Link
from .protocol import Decoder, SensorFrame, encode

FRAMES = {
    "imu (6 x f32)": dict(channels=6, samples_per_frame=1, sample_format="f32"),
    "audio (160 x i16)": dict(channels=1, samples_per_frame=160, sample_format="i16"),
    "big (480 x f32)": dict(channels=8, samples_per_frame=60, sample_format="f32"),
}


def _example(cfg: dict) -> SensorFrame:
    n = cfg["channels"] * cfg["samples_per_frame"]
    rng = np.random.default_rng(0)
    if cfg["sample_format"] == "i16":
        return SensorFrame(samples=rng.integers(-3000, 3000, n).astype(np.int16), channels=cfg["channels"])
    return SensorFrame(samples=rng.standard_normal(n).astype(np.float32), channels=cfg["channels"])


def bench_codec(seconds: float) -> list[str]:
    rows = ["| frame | wire bytes | encode frames/s | decode frames/s | decode MB/s |", "|---|---|---|---|---|"]
    for name, cfg in FRAMES.items():
        m = _example(cfg)
        wire = encode(m)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            for _ in range(200):
                encode(m, seq=n & 0xFFFF)
            n += 200
        enc_fps = n / (time.perf_counter() - t0)
        stream = b"".join(encode(m, seq=i) for i in range(2000))
        d, k, t0 = Decoder(), 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            d.feed(stream)
            k += 1
        dt = time.perf_counter() - t0
        rows.append(f"| {name} | {len(wire)} | {enc_fps:,.0f} | {2000 * k / dt:,.0f} | "
                    f"{len(stream) * k / dt / 1e6:.1f} |")
    # the pure-Python refs, to show what the C extensions buy
    m = _example(FRAMES["audio (160 x i16)"])
    fast = (framing.crc32c, framing.cobs_encode, framing.cobs_decode)
    framing.crc32c, framing.cobs_encode, framing.cobs_decode = (framing.crc32c_ref, framing.cobs_encode_ref,
                                                                 framing.cobs_decode_ref)
    try:
        stream = b"".join(encode(m, seq=i) for i in range(200))
        t0 = time.perf_counter()
        Decoder().feed(stream)
        fps = 200 / (time.perf_counter() - t0)
        rows.append(f"| audio, pure-Python refs | {len(stream) // 200} | - | {fps:,.0f} | - |")
    finally:
        framing.crc32c, framing.cobs_encode, framing.cobs_decode = fast
    return rows


def bench_pty_throughput(rates: list[float], seconds: float) -> list[str]:
    rows = ["| frame | requested Hz | received frames/s | received kB/s | seq gaps | host queue drops | "
            "device TX drops |", "|---|---|---|---|---|---|---|"]
    for name, cfg in FRAMES.items():
        for rate in rates:
            cmd = [sys.executable, "-m", "firmware_bridge.emulator", "--rate-hz", str(rate), "--duration",
                   str(seconds + 3), "--telemetry-hz", "50", "--source", "noise",
                   *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in cfg.items()), [])]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                path = p.stdout.readline().strip()
                with Link(path, queue_size=1 << 16) as link:
                    link.wait_connected(3.0)
                    time.sleep(0.3)  # past start-up
                    link.sensor.clear()
                    s0, t0 = link.stats(), time.monotonic()
                    n = 0
                    while time.monotonic() - t0 < seconds:
                        if link.recv_sensor(timeout=0.1) is not None:
                            n += 1
                    dt = time.monotonic() - t0
                    s1 = link.stats()
            finally:
                p.terminate()
                _, err = p.communicate(timeout=10)
            tx_dropped = json.loads(err.strip().splitlines()[-1])["sent"]["tx_dropped"]
            rows.append(f"| {name} | {rate:,.0f} | {n / dt:,.0f} | {(s1['bytes'] - s0['bytes']) / dt / 1e3:,.0f} | "
                        f"{s1['seq_gaps'] - s0['seq_gaps']} | {s1['dropped_sensor'] - s0['dropped_sensor']} | "
                        f"{tx_dropped} |")
    return rows


def _pct(x: list[float]) -> str:
    a = np.asarray(x) * 1e6
    return " | ".join(f"{v:.0f}" for v in np.percentile(a, [50, 90, 99])) + f" | {a.max():.0f}"


def bench_latency(n_pings: int, loop_seconds: float) -> list[str]:
    rows = ["| path | n | p50 µs | p90 µs | p99 µs | max µs |", "|---|---|---|---|---|---|"]
    cmd = [sys.executable, "-m", "firmware_bridge.emulator", "--rate-hz", "100", "--duration", "60"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        with Link(p.stdout.readline().strip()) as link:
            link.wait_connected(3.0)
            for _ in range(50):
                link.ping()
            rtt = [link.ping() for _ in range(n_pings)]
    finally:
        p.terminate()
        p.wait(5)
    rows.append(f"| ping host->device->host | {len(rtt)} | {_pct(rtt)} |")
    cmd = [sys.executable, "-m", "firmware_bridge.emulator", "--rate-hz", "1000", "--duration", "60"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with Link(p.stdout.readline().strip()) as link:
            link.wait_connected(3.0)
            src = SerialFrameSource(link)
            sink = SerialOutputSink(link, source=src)
            t0 = time.monotonic()
            while time.monotonic() - t0 < loop_seconds:
                x = src.read(timeout=0.5)
                if x is not None:
                    sink.write(x[:2])
            time.sleep(0.1)
    finally:
        p.terminate()
        _, err = p.communicate(timeout=10)
    lat = [v * 1e-6 for v in json.loads(err.strip().splitlines()[-1])["loop_latency_us"][100:]]
    rows.append(f"| sensor frame -> host -> OUTPUT, 1 kHz, as the device times it | {len(lat)} | {_pct(lat)} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m firmware_bridge.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter points (~10 s)")
    a = ap.parse_args(argv)
    seconds = 1.0 if a.quick else 2.0
    rates = [1000, 20000] if a.quick else [1000, 5000, 20000]
    print(f"Command: `python -m firmware_bridge.bench{' --quick' if a.quick else ''}`  ")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Linux "
          f"{platform.release()}, Python {platform.python_version()}, numpy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} at start\n")
    print("Codec (no I/O, one thread):\n")
    print("\n".join(bench_codec(seconds)) + "\n")
    print("pty throughput, device -> host (Link reader thread + consumer in this process):\n")
    print("\n".join(bench_pty_throughput(rates, seconds)) + "\n")
    print("Latency over the pty:\n")
    print("\n".join(bench_latency(500 if a.quick else 2000, seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
