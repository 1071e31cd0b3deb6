"""End to end over a real pty pair: DeviceEmulator <-> Link, as a host opens /dev/pts/N with pyserial.

Clean link at 1 kHz: zero loss both ways. With injected faults: the host's counters equal what
the emulator says it injected. Disconnect and stall: the link notices and comes back.
"""

import os
import subprocess
import sys
import time
import wave

import numpy as np
import pytest

from firmware_bridge.adapters import SerialFrameSource, SerialOutputSink, SerialPowerMonitor
from firmware_bridge.emulator import DeviceEmulator, EmulatorConfig
from firmware_bridge.errors import ConfigError
from firmware_bridge.link import Link, LinkState
from firmware_bridge.protocol import ErrorCode, SensorFrame

def _have_pty() -> bool:
    try:
        fds = os.openpty()
    except (AttributeError, OSError):
        return False
    for fd in fds:
        os.close(fd)
    return True


# serial: the 1 kHz emulator and link threads count frames in real time; scripts/test.sh runs them alone
pytestmark = [pytest.mark.serial, pytest.mark.skipif(not _have_pty(), reason="needs POSIX ptys (os.openpty failed: no /dev/pts?)")]


def wait_until(pred, timeout=3.0):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.005)
    return True


def drain(emu, link):
    """Stop the device's periodic traffic and wait until the host has read every byte it sent."""
    emu.pause()
    assert wait_until(lambda: emu.idle and link.decoder.stats.bytes == emu.sent["bytes"]), \
        (link.decoder.stats.bytes, emu.sent["bytes"])


def test_clean_link_1khz_zero_loss_both_ways():
    seconds, rate = 2.5, 1000.0
    with DeviceEmulator(rate_hz=rate, channels=6, telemetry_hz=100) as emu, Link(emu.port) as link:
        assert link.wait_connected(2.0)
        src = SerialFrameSource(link)
        sink = SerialOutputSink(link, source=src)
        seqs = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            x = src.read(timeout=0.5)
            assert x is not None and x.shape == (6,) and x.dtype == np.float32
            seqs.append(src.last_seq)
            sink.write(x[:2], k=16)
        drain(emu, link)
        while (x := src.read(timeout=0)) is not None:
            seqs.append(src.last_seq)
            sink.write(x[:2])
        s = link.stats()
        sent = emu.sent["sensor"]
        assert sent >= 0.9 * rate * seconds, f"emulator only managed {sent} frames in {seconds} s"
        assert len(seqs) == sent and seqs == sorted(seqs)
        assert s["seq_gaps"] == s["resyncs"] == s["crc_errors"] == s["dropped_sensor"] == 0, s
        assert s["frames"] == emu.sent["frames"]
        assert wait_until(lambda: emu.received.get("Output", 0) == len(seqs))  # host -> device, no loss
        assert emu._decoder.stats.resyncs == emu._decoder.stats.seq_gaps == 0
        assert [o.ref_seq for o in list(emu.outputs)[-5:]] == seqs[-5:]


def test_injected_faults_match_host_counters():
    cfg = EmulatorConfig(rate_hz=1000, channels=4, samples_per_frame=4, telemetry_hz=100, seed=3,
                         bitflip=0.02, drop_byte=0.01, truncate=0.01, garbage=0.02)
    with DeviceEmulator(cfg) as emu, Link(emu.port, queue_size=8192) as link:
        assert link.wait_connected(2.0)
        time.sleep(1.5)
        drain(emu, link)
        s, inj = link.stats(), emu.injected
        assert min(inj["bitflip"], inj["drop_byte"], inj["truncate"], inj["garbage"]) > 0, inj
        assert s["seq_gaps"] == inj["frames_corrupted"], (s, inj)
        assert s["resyncs"] == inj["rejects_expected"], (s, inj)
        assert s["frames"] == emu.sent["frames"] - inj["frames_corrupted"]
        assert s["crc_errors"] > 0 and s["state"] == "connected"


def test_disconnect_and_stall_recover(tmp_path):
    dev = str(tmp_path / "essm-dev")  # stable symlink, repointed to the new pty after a disconnect
    with DeviceEmulator(rate_hz=200, link_path=dev) as emu, \
            Link(dev, heartbeat_interval=0.05, heartbeat_timeout=0.2, backoff_initial=0.02, backoff_max=0.1) as link:
        assert link.wait_connected(2.0)
        emu.request_disconnect(0.2)
        assert link.wait_state(LinkState.DISCONNECTED, 2.0)
        assert link.wait_connected(3.0), link.stats()
        assert link.stats()["port_errors"] >= 1 and link.stats()["reconnects"] >= 1
        assert link.recv_sensor(timeout=1.0) is not None

        emu.request_stall(0.5)  # silent past heartbeat_timeout, port stays open
        assert link.wait_state(LinkState.DISCONNECTED, 2.0)
        assert link.wait_connected(3.0)
        s = link.stats()
        assert s["heartbeat_timeouts"] >= 1 and s["reconnects"] >= 2
        assert emu.injected["disconnect"] == 1 and emu.injected["stall"] == 1


def test_budget_drives_power_and_energy_is_monotonic():
    with DeviceEmulator(rate_hz=100, telemetry_hz=200, p_idle_w=1.0, p_per_k_w=0.1) as emu, Link(emu.port) as link:
        assert link.wait_connected(2.0)
        pm = SerialPowerMonitor(link)
        for k in (4, 32):
            rep = link.set_budget(k, timeout=1.0)
            assert rep.k == k and rep.power_w == pytest.approx(1.0 + 0.1 * k)
            time.sleep(0.05)
            readings = []
            for _ in range(10):
                time.sleep(0.012)
                readings.append(pm.read())
            assert readings[-1]["power_w"] == pytest.approx(1.0 + 0.1 * k, rel=1e-6)
            last = readings[-1]
            assert last["voltage_v"] * last["current_a"] == pytest.approx(last["power_w"], rel=1e-5)
            e = [r["energy_j"] for r in readings]
            t = [r["time_s"] for r in readings]
            assert e == sorted(e) and t == sorted(t)
        # mean power from the energy counter agrees with the model at the final budget
        r0 = pm.read()
        time.sleep(0.3)
        r1 = pm.read()
        assert (r1["energy_j"] - r0["energy_j"]) / (r1["time_s"] - r0["time_s"]) == pytest.approx(4.2, rel=0.02)


def test_recordings_npy_and_wav(tmp_path):
    rec = np.arange(30, dtype=np.float32).reshape(10, 3)
    np.save(tmp_path / "r.npy", rec)
    with DeviceEmulator(rate_hz=500, channels=3, source=str(tmp_path / "r.npy")) as emu, Link(emu.port) as link:
        src = SerialFrameSource(link)
        got = [src.read(timeout=1.0) for _ in range(12)]
    np.testing.assert_array_equal(np.stack(got), rec[np.arange(12) % 10])

    pcm = (np.arange(64, dtype=np.int16) * 512 - 16384).astype("<i2")
    with wave.open(str(tmp_path / "a.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(pcm.tobytes())
    with DeviceEmulator(rate_hz=500, channels=1, samples_per_frame=16, source=str(tmp_path / "a.wav")) as emu, \
            Link(emu.port) as link:
        m = link.recv_sensor(timeout=1.0)
    assert m.samples.dtype == np.int16 and m.scale == pytest.approx(1 / 32768)
    np.testing.assert_array_equal(m.samples, pcm[:16])


def test_generated_int16_frames_and_device_error_reply():
    with DeviceEmulator(rate_hz=500, channels=2, source="sine", sample_format="i16") as emu, Link(emu.port) as link:
        m = link.recv_sensor(timeout=1.0)
        assert m.samples.dtype == np.int16 and m.scale == pytest.approx(1 / 1024) and m.channels == 2
        assert np.all(np.abs(m.as_float32()) <= 1.0 + 1 / 1024)
        hello = link.recv(timeout=1.0)
        assert hello.role == 1 and hello.sample_format == 2 and hello.name == "essm-emu"
        seq = link.send(SensorFrame(samples=np.zeros(2, np.float32)))  # a host may not send sensor frames
        err = link.recv(timeout=1.0)
        assert err.code == ErrorCode.UNKNOWN_TYPE and err.ref_seq == seq and "SensorFrame" in err.text
        assert link.stats()["rx_errors_reported"] == 1


def test_emulator_config_rejects_bad_values():
    with pytest.raises(TypeError):
        EmulatorConfig(rate=5)
    with pytest.raises(ConfigError, match="bitflip=2"):
        EmulatorConfig(bitflip=2)
    with pytest.raises(ConfigError, match="source='x.mp3'"):
        DeviceEmulator(source="x.mp3")


def test_emulator_cli_prints_pty_and_serves():
    assert subprocess.run([sys.executable, "-m", "firmware_bridge.emulator", "--help"],
                          capture_output=True, timeout=30).returncode == 0
    p = subprocess.Popen([sys.executable, "-m", "firmware_bridge.emulator", "--rate-hz", "200", "--duration", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        path = p.stdout.readline().strip()
        assert path.startswith("/dev/")
        with Link(path) as link:
            assert link.wait_connected(3.0)
            assert link.recv_sensor(timeout=2.0) is not None
    finally:
        p.terminate()
        p.wait(5)


@pytest.mark.parametrize("kind", ["file", "dir", "symlink"])
def test_link_path_that_is_not_an_emulator_link_is_refused(tmp_path, kind):
    """#11 item 16: link_path replaced an existing regular file with its symlink and deleted it on stop."""
    p = tmp_path / "essm-dev"
    if kind == "file":
        p.write_text("precious")
    elif kind == "dir":
        p.mkdir()
    else:
        (tmp_path / "target").write_text("precious")
        p.symlink_to(tmp_path / "target")
    with pytest.raises(ConfigError, match="refusing to replace"):
        DeviceEmulator(link_path=str(p))
    assert p.exists() and (p.is_dir() or p.read_text() == "precious")
    emu = DeviceEmulator(link_path=str(tmp_path / "free"))   # free at construction, taken before start
    (tmp_path / "free").write_text("precious")
    with pytest.raises(ConfigError):
        emu.start()
    assert (tmp_path / "free").read_text() == "precious"


def test_stale_pty_link_from_an_earlier_run_is_reused_and_removed_on_stop(tmp_path):
    dev = tmp_path / "essm-dev"
    dev.symlink_to("/dev/pts/999")                 # what a killed emulator leaves behind
    with DeviceEmulator(rate_hz=50, link_path=str(dev)) as emu:
        assert os.readlink(dev) == emu.pty_path
    assert not os.path.lexists(dev)


def test_frames_queued_at_a_disconnect_are_counted(tmp_path):
    """#11 item 16: frames in the device's TX ring at a disconnect were lost without a counter."""
    emu = DeviceEmulator(rate_hz=2000, channels=8, samples_per_frame=63, wait_for_hello=False)
    with emu:                                      # nobody reads the pty: its buffer fills, then the ring
        deadline = time.monotonic() + 10
        while emu.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not emu.idle, "the TX ring never filled"
        emu.request_disconnect(0.05)
        while emu.injected["disconnect"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert emu.injected["disconnect"] == 1
    assert emu.sent["tx_lost_at_disconnect"] > 0, emu.sent


def test_frame_size_that_cannot_fit_a_payload_is_refused_up_front():
    """Found while testing item 16: 8 x 64 f32 samples killed the emulator thread with ProtocolError."""
    with pytest.raises(ConfigError, match="at most 510 samples"):
        EmulatorConfig(channels=8, samples_per_frame=64)
    EmulatorConfig(channels=2, samples_per_frame=510, sample_format="i16")
