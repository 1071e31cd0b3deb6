"""Telemetry readers on fake sysfs / procfs trees (no hardware), with a fake clock."""
import os

import pytest

from controllers import (CpuMonitor, FakeClock, HwmonPowerReader, LatencyMeter, PowerModel, RaplReader,
                         Telemetry, open_energy_source)
from controllers.telemetry import fit_power_model


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(str(text))


def rapl_tree(root, zones):
    for name, (e, rng) in zones.items():
        write(root / name / "energy_uj", e)
        write(root / name / "max_energy_range_uj", rng)
        write(root / name / "name", "package-0")
    write(root / "intel-rapl:0" / "intel-rapl:0:0" / "energy_uj", 1)   # subzone: not counted


def test_rapl_reads_and_unwraps(tmp_path):
    root = tmp_path / "powercap"
    rapl_tree(root, {"intel-rapl:0": (1_000_000, 10_000_000), "intel-rapl:1": (0, 10_000_000)})
    clock = FakeClock()
    r = RaplReader(str(root), clock=clock)
    assert r.available and r.zones == ["intel-rapl:0", "intel-rapl:1"]
    first = r.read()
    assert first["energy_j"] == 0 and first["power_w"] is None
    clock.advance(1.0)
    write(root / "intel-rapl:0" / "energy_uj", 3_000_000)                # +2 J
    write(root / "intel-rapl:1" / "energy_uj", 500_000)                  # +0.5 J
    s = r.read()
    assert s["energy_j"] == pytest.approx(2.5) and s["power_w"] == pytest.approx(2.5)
    clock.advance(1.0)
    write(root / "intel-rapl:0" / "energy_uj", 1_000_000)                # wrapped: +8 J
    s = r.read()
    assert s["energy_j"] == pytest.approx(10.5) and s["power_w"] == pytest.approx(8.0)
    assert r._zones[0][1].wraps == 1


def test_rapl_unavailable_answers(tmp_path):
    r = RaplReader(str(tmp_path / "nope"))
    assert not r.available and r.read() is None and "no powercap" in r.reason
    (tmp_path / "empty").mkdir()
    r = RaplReader(str(tmp_path / "empty"))
    assert not r.available and "no RAPL zones" in r.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files")
def test_rapl_root_only_is_unavailable_not_a_crash(tmp_path):
    root = tmp_path / "powercap"
    rapl_tree(root, {"intel-rapl:0": (5, 100)})
    os.chmod(root / "intel-rapl:0" / "energy_uj", 0)                    # as kernels >= 5.10
    r = RaplReader(str(root))
    assert not r.available and r.read() is None and "root" in r.reason


def test_hwmon_ina3221_voltage_current(tmp_path):
    d = tmp_path / "hwmon" / "hwmon1"
    write(d / "name", "ina3221")
    write(d / "in1_input", 5000)      # mV
    write(d / "curr1_input", 400)     # mA -> 2 W
    write(d / "in2_input", 5000)
    write(d / "curr2_input", 200)     # 1 W
    write(d / "in2_label", "VDD_CPU")
    write(d / "in7_input", 5000)      # the sum channel: skipped
    write(d / "curr7_input", 600)
    write(d / "in7_label", "Sum of shunt voltages")
    write(d / "in3_input", 1800)      # voltage without current: not a power channel
    other = tmp_path / "hwmon" / "hwmon0"
    write(other / "name", "coretemp")
    write(other / "temp1_input", 40000)
    clock = FakeClock()
    r = HwmonPowerReader(str(tmp_path / "hwmon"), clock=clock)
    assert r.available
    s = r.read()
    assert s["power_w"] == pytest.approx(3.0) and s["energy_j"] == 0
    clock.advance(2.0)
    write(d / "curr1_input", 800)     # now 4 + 1 = 5 W; trapezoid over 2 s: 8 J
    s = r.read()
    assert s["power_w"] == pytest.approx(5.0) and s["energy_j"] == pytest.approx(8.0)
    only = HwmonPowerReader(str(tmp_path / "hwmon"), channels=[2], clock=clock)
    assert only.read()["power_w"] == pytest.approx(1.0)


def test_hwmon_power_input_and_missing(tmp_path):
    write(tmp_path / "hwmon" / "hwmon0" / "name", "acpi_power")
    write(tmp_path / "hwmon" / "hwmon0" / "power1_input", 7_500_000)   # µW
    assert HwmonPowerReader(str(tmp_path / "hwmon")).read()["power_w"] == pytest.approx(7.5)
    r = HwmonPowerReader(str(tmp_path / "none"))
    assert not r.available and r.read() is None and r.reason
    assert HwmonPowerReader(str(tmp_path / "hwmon"), names=["ina3221"]).read() is None


def test_power_model_and_fallback(tmp_path):
    clock = FakeClock()
    pm = PowerModel(idle_w=1.0, dyn_w=4.0, clock=clock)
    pm.read()
    clock.advance(1.0)
    pm.on_step(5, 0.25)
    s = pm.read()
    assert s["energy_j"] == pytest.approx(2.0) and s["power_w"] == pytest.approx(2.0)
    src = open_energy_source(powercap_root=str(tmp_path / "a"), hwmon_root=str(tmp_path / "b"), clock=clock)
    assert isinstance(src, PowerModel)
    rapl_tree(tmp_path / "pc", {"intel-rapl:0": (0, 100)})
    assert isinstance(open_energy_source(powercap_root=str(tmp_path / "pc")), RaplReader)
    serial = object()
    assert open_energy_source(serial_monitor=serial) is serial
    idle, dyn = fit_power_model([(0.0, 2.0), (0.5, 3.5), (1.0, 5.0)])
    assert idle == pytest.approx(2.0) and dyn == pytest.approx(3.0)


def test_cpu_monitor_fake_proc(tmp_path):
    proc, sys_ = tmp_path / "proc", tmp_path / "sys"
    write(proc / "stat", "cpu  100 0 100 800 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0\n")
    write(proc / "pressure" / "cpu", "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\n"
                                     "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    write(sys_ / "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", 1_500_000)   # kHz
    clock = FakeClock()
    m = CpuMonitor(proc_root=str(proc), sys_root=str(sys_), cpus=[0], min_interval_s=0.05, clock=clock)
    r = m.read()
    assert r["cpu_util"] is None                    # needs two samples
    assert r["cpu_freq_hz"] == pytest.approx(1.5e9) and r["psi_some_avg10"] == 12.5
    write(proc / "stat", "cpu  200 0 200 900 0 0 0 0\ncpu0 125 0 125 450 0 0 0 0\ncpu1 75 0 75 450 0 0 0 0\n")
    assert m.read()["cpu_util"] is None              # cached within min_interval_s
    clock.advance(0.1)
    assert m.read()["cpu_util"] == pytest.approx(150 / 200)


def test_cpu_monitor_unavailable(tmp_path):
    write(tmp_path / "proc" / "cpuinfo", "processor : 0\ncpu MHz : 2400.0\n")
    m = CpuMonitor(proc_root=str(tmp_path / "proc"), sys_root=str(tmp_path / "sys"), clock=FakeClock())
    r = m.read()
    assert r["cpu_util"] is None and r["psi_some_avg10"] is None and r["cpu_freq_hz"] == pytest.approx(2.4e9)
    assert "pressure" in m.reason["psi_some_avg10"]


def test_cpu_monitor_real_machine_does_not_crash():
    r = CpuMonitor(min_interval_s=0).read()
    assert set(r) == {"cpu_util", "cpu_freq_hz", "psi_some_avg10", "psi_some_frac", "run_queue"}


def test_latency_meter_and_telemetry_record():
    t = iter([0, 100_000, 200_000, 500_000])                             # ns
    m = LatencyMeter(deadline_s=2e-4, timer_ns=lambda: next(t))
    m.start()
    assert m.stop() == pytest.approx(1e-4)
    m.start()
    assert m.stop() == pytest.approx(3e-4)
    assert m.overruns == 1 and m.miss_rate == 0.5 and m.worst_slack_s == pytest.approx(-1e-4)
    tel = Telemetry(latency_s=0.0012)
    assert tel.deadline_s is None and tel.slack_s is None and tel.overrun is None and not tel.is_empty()
    assert Telemetry(latency_s=3e-4, deadline_s=2e-4).overrun is True
    assert Telemetry().is_empty()


def test_rapl_permission_denied_is_unavailable(tmp_path, monkeypatch):
    """Kernels >= 5.10 make energy_uj root-only; simulated here since tests may run as root."""
    import builtins
    root = tmp_path / "powercap"
    rapl_tree(root, {"intel-rapl:0": (5, 100)})
    real_open = builtins.open

    def deny(path, *a, **k):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr(builtins, "open", deny)
    r = RaplReader(str(root))
    assert not r.available and r.read() is None and "root" in r.reason
