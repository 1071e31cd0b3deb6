"""Budget profile: sweep JSON, synthetic curve, calibration, round trip through a program file, CLI."""
import json

import numpy as np
import pytest

from controllers import BudgetProfile, ProfileError, build_profile, calibrate_latency, load_sweep_json
from controllers.profile import synthetic_accuracy
from essm_stream.config import ESSMConfig
from essm_stream.engine import StreamEngine, tiny_program
from essm_stream.program import StreamProgram

CFG = ESSMConfig(d_in=4, d_out=3, d_model=16, n_layers=1, seq_len=32, k_max=8, d_gate=8)


def test_synthetic_curve_is_saturating():
    a = synthetic_accuracy(range(1, 33))
    assert np.all(np.diff(a) > 0) and a[0] == pytest.approx(0.40) and a[-1] < 0.95
    p = BudgetProfile(list(range(1, 33)), 32, accuracy=a)
    assert p.collapse_boundary == 9 and p.sweet_spot == 15


def test_sweep_json(tmp_path):
    f = tmp_path / "sweep.json"
    f.write_text(json.dumps({"K": [1, 4, 8], "acc": [0.3, 0.8, 0.9], "retention": [1, 1, 1],
                             "full_acc": 0.9, "sweet_spot": 8, "collapse_boundary": 4}))
    assert load_sweep_json(str(f)) == ([1, 4, 8], [0.3, 0.8, 0.9])
    f.write_text(json.dumps({"K": [1, 2], "accuracy": [0.3, 0.4]}))
    with pytest.raises(ProfileError, match="'K' and 'acc'"):
        load_sweep_json(str(f))
    f.write_text("{nope")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_sweep_json(str(f))
    with pytest.raises(ProfileError):
        load_sweep_json(str(tmp_path / "missing.json"))


def test_profile_interpolates_and_validates():
    p = BudgetProfile([1, 4, 8], 8, accuracy=[0.2, 0.8, 0.9], latency_s=[1e-5, 4e-5, None])
    assert p.acc(2) == pytest.approx(0.4) and p.lat(8) == pytest.approx(4e-5) and p.energy_j is None
    with pytest.raises(ProfileError):
        BudgetProfile([1, 1], 8)
    with pytest.raises(ProfileError):
        BudgetProfile([9], 8)


def test_calibrate_latency_restores_state():
    eng = StreamEngine(tiny_program(CFG))
    x = np.ones(4, np.float32)
    eng.step(x, 3)
    y_before = eng.snapshot()
    cal = calibrate_latency(eng, [1, 4, 8], steps=8, rounds=2)
    assert cal["K"] == [1, 4, 8] and np.all(np.diff(cal["latency_s"]) >= 0) and cal["latency_s"][0] > 0
    np.testing.assert_array_equal(eng.snapshot().hist, y_before.hist)


def test_profile_round_trip_through_program_file(tmp_path):
    prog = tiny_program(CFG)
    path = str(tmp_path / "p.essm")
    prog.save(path)
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"K": [1, 2, 4, 8], "acc": [0.5, 0.6, 0.8, 0.85]}))
    d = build_profile(StreamEngine(StreamProgram.load(path)), sweep=str(sweep), ks=[1, 2, 4, 8], steps=8)
    prog2 = StreamProgram.load(path)
    prog2.set_budget_profile(d, save=True)
    back = BudgetProfile.from_program(StreamProgram.load(path))
    assert back.ks == [1, 2, 4, 8]
    assert back.acc(4) == pytest.approx(0.8) and back.acc(3) == pytest.approx(0.7)
    assert back.lat(8) == pytest.approx(d["latency_s"][-1]) and back.energy(1) > 0
    assert back.extra["source"]["accuracy"].startswith("sweep")
    assert back.to_dict()["accuracy"] == pytest.approx([0.5, 0.6, 0.8, 0.85])
    with pytest.raises(ProfileError, match="no budget profile"):
        BudgetProfile.from_program(tiny_program(CFG))


def test_cli_profile(tmp_path, capsys):
    from essm_stream.cli import main
    path = str(tmp_path / "p.essm")
    tiny_program(CFG).save(path)
    assert main(["profile", path, "--ks", "1,4,8", "--steps", "8", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "| 8 |" in out
    p = StreamProgram.load(path).budget_profile
    assert p["K"] == [1, 4, 8] and len(p["latency_s"]) == 3
    assert json.loads((tmp_path / "p.json").read_text())["K"] == [1, 4, 8]
    assert main(["profile", str(tmp_path / "missing.essm")]) == 2


def test_profiler_takes_any_object_with_step():
    """#12: controllers stands on numpy alone; the one per-K profiler times anything with step(x, K)."""
    class Stepper:                       # no engine, no snapshot: a fake device whose step costs K µs
        k_max, d_in = 8, 3

        def __init__(self):
            self.t, self.seen = 0, []

        def step(self, x, K):
            assert x.shape == (3,)
            self.seen.append(K)
            self.t += 1000 * K

    st = Stepper()
    cal = calibrate_latency(st, [1, 4, 8, 99], steps=8, rounds=2, timer_ns=lambda: st.t)
    assert cal["K"] == [1, 4, 8] and cal["latency_raw_s"] == pytest.approx([1e-6, 4e-6, 8e-6])
    assert set(st.seen) == {1, 4, 8}
    with pytest.raises(ProfileError, match="step"):
        calibrate_latency(object(), [1])
    with pytest.raises(ProfileError, match="x="):
        calibrate_latency(type("NoShape", (), {"step": lambda self, x, k: None})(), [1])
