"""Link and adapters over pyserial's loop:// (the link hears its own frames): queues, drop policy,
heartbeat timeout with a fake clock, back-off, errors. No hardware, no pty."""

import threading
import time

import numpy as np
import pytest

from firmware_bridge.adapters import SerialFrameSource, SerialOutputSink, SerialPowerMonitor
from firmware_bridge.errors import BridgeTimeout, ConfigError, LinkError
from firmware_bridge.link import DropOldestQueue, Link, LinkState
from firmware_bridge.protocol import BudgetReport, Error, Output, SensorFrame, Telemetry


class FakeClock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def wait_until(pred, timeout=2.0):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.002)
    return True


def test_loopback_roundtrip_ping_and_stats():
    with Link("loop://") as link:
        assert link.wait_connected(1.0)
        link.send(SensorFrame(samples=np.arange(4, dtype=np.float32), channels=2))
        m = link.recv_sensor(timeout=1.0)
        np.testing.assert_array_equal(m.samples, np.arange(4, dtype=np.float32))
        assert 0 <= link.ping(timeout=1.0) < 0.5
        link.send(Error(code=3, text="boom"))
        msgs = [link.recv(0.5) for _ in range(2)]  # our own HELLO comes back first
        assert isinstance(msgs[-1], Error) and msgs[-1].text == "boom"
        s = link.stats()
        assert s["crc_errors"] == s["resyncs"] == s["seq_gaps"] == 0 and s["rx_errors_reported"] == 1
    assert link.state is LinkState.CLOSED
    assert link.recv_sensor(timeout=0.01) is None  # closed queues answer at once


def test_sensor_queue_drops_oldest_and_counts():
    with Link("loop://", queue_size=8) as link:
        for i in range(50):
            link.send(SensorFrame(samples=np.array([i], np.float32)))
        assert wait_until(lambda: link.decoder.stats.frames >= 51)
        got = [int(link.recv_sensor(0.5).samples[0]) for _ in range(8)]
        assert got == list(range(42, 50))
        assert link.stats()["dropped_sensor"] == 42


def test_drop_oldest_queue_unblocks_waiters_on_close():
    q = DropOldestQueue(2)
    out = []
    t = threading.Thread(target=lambda: out.append(q.get()))
    t.start()
    q.close()
    t.join(1.0)
    assert out == [None] and not t.is_alive()
    with pytest.raises(ConfigError, match="0"):
        DropOldestQueue(0)


def test_heartbeat_timeout_and_recovery_with_fake_clock():
    clock = FakeClock()
    # On loop:// the link hears itself, so it goes quiet only while the fake clock stands still
    # between heartbeats; the re-handshake HELLO it sends on timeout comes back and reconnects it.
    with Link("loop://", clock=clock, heartbeat_interval=4.9, heartbeat_timeout=5.0) as link:
        assert link.wait_connected(1.0)
        time.sleep(0.05)
        clock.t += 4.0
        time.sleep(0.05)
        assert link.state is LinkState.CONNECTED and link.stats()["heartbeat_timeouts"] == 0  # 4 s < 5 s
        clock.t += 1.5
        assert wait_until(lambda: link.stats()["heartbeat_timeouts"] == 1)
        assert wait_until(lambda: link.stats()["reconnects"] == 1)
        assert link.wait_connected(1.0)


def test_unknown_and_bad_settings_are_rejected():
    with pytest.raises(TypeError):
        Link("loop://", heartbeat_periode=0.1)
    with pytest.raises(ConfigError, match="heartbeat_timeout=-1"):
        Link("loop://", heartbeat_timeout=-1)
    with pytest.raises(ConfigError, match="must exceed heartbeat_interval"):
        Link("loop://", heartbeat_interval=1.0, heartbeat_timeout=0.5)


def test_send_on_closed_link_raises_link_error():
    link = Link("loop://")
    with pytest.raises(LinkError, match="closed"):
        link.send(SensorFrame())
    with pytest.raises(LinkError, match="could not open"):
        Link("/dev/does-not-exist-essm", reconnect=False).open()


def test_reopen_back_off_grows():
    link = Link("/dev/does-not-exist-essm", backoff_initial=0.02, backoff_max=0.16)
    with link:
        time.sleep(0.6)
        fails = link.stats()["open_failures"]
        assert link.state is LinkState.CONNECTING
    # 0.02, 0.04, 0.08, 0.16, 0.16 ...: about 6 tries in 0.6 s, not one per read timeout (60)
    assert 3 <= fails <= 10, fails


def test_ping_and_set_budget_time_out_without_a_peer():
    with Link("loop://") as link:
        with pytest.raises(BridgeTimeout, match="BUDGET_REPORT"):
            link.set_budget(4, timeout=0.05)  # loop:// echoes SET_BUDGET but nobody answers it


def test_adapters_over_loopback():
    clock = FakeClock()
    with Link("loop://", clock=clock, heartbeat_timeout=10.0) as link:
        src, pm = SerialFrameSource(link), SerialPowerMonitor(link, stale_after=1.0)
        sink = SerialOutputSink(link, source=src)
        assert pm.read() is None and src.read(timeout=0.01) is None
        link.send(SensorFrame(samples=np.array([1000, -2000], np.int16), scale=1e-3))
        x = src.read(timeout=1.0)
        assert x.dtype == np.float32 and np.allclose(x, [1.0, -2.0])
        sink.write(np.ones((2, 2)), k=8)
        sink.write(np.zeros(3), k=8)  # same k: no second BUDGET_REPORT
        sink.write(np.zeros(1), k=9)
        got = []
        while (m := link.recv(0.2)) is not None:
            got.append(m)
        kinds = [type(m).__name__ for m in got if not type(m).__name__ == "Hello"]
        assert kinds == ["BudgetReport", "Output", "Output", "BudgetReport", "Output"]
        assert got[-1].ref_seq == src.last_seq and [m.k for m in got if isinstance(m, BudgetReport)] == [8, 9]
        assert isinstance(got[2], Output) and got[2].values.shape == (4,)

        link.send(Telemetry(bus_voltage_v=5.0, current_a=0.5, power_w=2.5, energy_uj=1_500_000), )
        assert wait_until(lambda: pm.read() is not None)
        r = pm.read()
        assert (r["power_w"], r["energy_j"], r["voltage_v"], r["current_a"]) == (2.5, 1.5, 5.0, 0.5)
        assert set(r) >= {"power_w", "energy_j", "voltage_v", "current_a", "time_s"}
        clock.t += 2.0
        assert pm.read() is None  # stale
    sink.write(np.zeros(1))
    assert sink.dropped == 1  # a closed link drops outputs, never raises into the runner


def test_frame_source_latest_only_skips_backlog():
    with Link("loop://") as link:
        src = SerialFrameSource(link, latest_only=True)
        for i in range(5):
            link.send(SensorFrame(samples=np.array([i], np.float32)))
        assert wait_until(lambda: len(link.sensor) == 5)
        assert src.read(0.5)[0] == 4 and src.skipped == 4
