"""#11 item 14 end to end: files the CLI writes respect the umask, and `essm-stream profile` rewriting a
program in place keeps its mode (it used to turn 0644 into 0600 and lock out a service user)."""
import os
import stat

import numpy as np
import pytest

from essm_stream.cli import main


@pytest.fixture
def tiny(tmp_path):
    from essm_stream.config import ESSMConfig
    from essm_stream.engine import tiny_program

    p = tmp_path / "tiny.essm"
    tiny_program(ESSMConfig(d_in=3, d_out=2, d_model=8, n_layers=1, seq_len=8, k_max=4)).save(p)
    return p


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_profile_in_place_keeps_the_programs_mode(tiny, umask022, capsys):
    os.chmod(tiny, 0o644)
    before = tiny.read_bytes()
    assert main(["profile", str(tiny), "--ks", "1,4", "--steps", "5", "--energy", "model",
                 "--json", str(tiny.parent / "prof.json")]) == 0
    assert tiny.read_bytes() != before                       # the profile was written into it
    assert _mode(tiny) == 0o644
    assert _mode(tiny.parent / "prof.json") == 0o644
    assert not list(tiny.parent.glob(".*.tmp"))


def test_run_output_respects_the_umask(tiny, tmp_path, umask022, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 5, 3), np.float32))
    os.umask(0o027)
    assert main(["run", str(tiny), str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    assert _mode(tmp_path / "y.npy") == 0o640
    assert np.load(tmp_path / "y.npy").shape == (2, 5, 2)
