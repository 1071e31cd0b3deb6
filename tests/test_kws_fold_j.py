"""Fold J (issue 9): validate on one native recorded speaker (slt, through festival HTS and flite), test on the
other (ked); the recorded-voice validation cap narrowed to named speakers (kws-eval --recorded-voices,
calib select --recorded-voices)."""
import shutil

import numpy as np
import pytest

from essm_stream.errors import ConfigError
from essm_stream.kws import calib as CAL
from essm_stream.kws import loso as L
from essm_stream.kws import loso_eval as E
from essm_stream.kws import voices as V
from essm_stream.kws.data import Event
from kws_sets import write_feature_set

J_SPEC = ("festival:ked_diphone~festival:cmu_us_slt_arctic_hts,flite:slt,festival:lp_diphone,festival:czech_machac,"
          "festival:hy_fi_mv_diphone")
J_NAME = "ho-festival.ked~festival.lp+festival.machac+festival.mv+festival.slt+flite.slt"
SLT = "festival:cmu_us_slt_arctic_hts,flite:slt"


def test_fold_j_validates_on_both_engines_of_slt_and_tests_ked_alone():
    assert V.fold_name(J_SPEC) == J_NAME and V.fold_name(J_NAME) == J_NAME
    f = V.fold(J_NAME)
    assert f["test"] == ("festival:ked_diphone",) and f["excluded"] == ()
    assert {"festival:cmu_us_slt_arctic_hts", "flite:slt", "festival:lp_diphone"} <= set(f["val"])
    assert not {"festival:cmu_us_slt_arctic_hts", "flite:slt", "festival:ked_diphone"} & set(f["train"])
    with pytest.raises(ConfigError):                     # a held-out speaker cannot validate
        V.fold_name("festival:ked_diphone,festival:cmu_us_slt_arctic_hts~flite:slt")


def test_recorded_speakers_match_a_person_through_any_engine():
    spk = L.recorded_speakers(SLT)
    assert L.recorded_speakers(None) is None and L.recorded_speakers(" ") is None
    assert L.recorded_speakers("flite:slt") == spk              # one person: either engine names her
    assert L.is_recorded(["flite:slt", "festival:cmu_us_slt_arctic_hts"], spk)
    assert not L.is_recorded(["festival:lp_diphone"], spk) and L.is_recorded(["festival:lp_diphone"])
    assert not L.is_recorded(["flite:slt", "festival:lp_diphone"], spk)
    for bad in ("espeak:m1", "festival:nobody", "flite:slt,xx"):
        with pytest.raises(ConfigError, match="recorded voices"):
            L.recorded_speakers(bad)


def _write(path, voices, seconds=30.0, steps=300, events=()):
    write_feature_set(path, np.zeros((steps, 96)), events=events, seconds=seconds,
                      meta={"snr_db": None, "seconds": seconds, "voices": voices})


@pytest.fixture()
def j_sets(tmp_path):
    from essm_stream.kws.spotter import bundled_program_path

    d = tmp_path / "sets"
    d.mkdir()
    _write(d / f"val_{J_NAME}_kw_clean.npz", ["espeak:m1"], events=[Event("yes", 5.0, 5.5)])
    _write(d / f"val_{J_NAME}_neg_clean.npz", ["espeak:m1"], 40.0)
    _write(d / f"val_{J_NAME}_neg_clean_cf.npz", ["festival:lp_diphone"], 50.0)
    _write(d / f"val_{J_NAME}_neg_clean_slth.npz", ["festival:cmu_us_slt_arctic_hts"], 20.0)
    _write(d / f"val_{J_NAME}_neg_10dB_sltf.npz", ["flite:slt"], 10.0)
    _write(d / f"test_{J_NAME}_kw_clean.npz", ["festival:ked_diphone"], events=[Event("no", 5.0, 5.5)])
    (tmp_path / "m" / J_NAME).mkdir(parents=True)
    shutil.copyfile(bundled_program_path(), tmp_path / "m" / J_NAME / "kws.essm")
    return d, tmp_path / "m" / J_NAME / "kws.essm"


def test_kws_eval_cap_counts_only_the_named_speakers_sets(j_sets):
    d, prog = j_sets
    r = E.evaluate_family(J_NAME, d, prog, False, 10.0, pocketsphinx=False, gate=False, fa_on="neg",
                          recorded_fa_target=2.0, recorded_voices=SLT)
    assert sorted(r["val_recorded_sets"]) == sorted([f"val_{J_NAME}_neg_10dB_sltf.npz", f"val_{J_NAME}_neg_clean_slth.npz"])
    assert r["val_recorded_neg_hours"] == pytest.approx(30.0 / 3600)
    r_all = E.evaluate_family(J_NAME, d, prog, False, 10.0, pocketsphinx=False, gate=False, fa_on="neg",
                              recorded_fa_target=2.0)                   # every all-recorded set: lp's too
    assert r_all["val_recorded_neg_hours"] == pytest.approx(80.0 / 3600) and len(r_all["val_recorded_sets"]) == 3
    with pytest.raises(FileNotFoundError, match="recorded"):
        E.evaluate_family(J_NAME, d, prog, False, 10.0, pocketsphinx=False, gate=False, fa_on="neg",
                          recorded_fa_target=2.0, recorded_voices="festival:czech_machac")


def test_calib_readout_cap_counts_only_the_named_speakers_sets(j_sets):
    d, prog = j_sets
    sets = CAL.val_sets(d, J_NAME)
    r = CAL.readout(prog, sets, caps=(10.0,), fa_on="neg", recorded_cap=2.0, recorded_voices=SLT)
    assert r["hours_recorded_neg"] == pytest.approx(30.0 / 3600) and len(r["recorded_sets"]) == 2
    assert r["recorded_voices"] == SLT and "guard_fa_per_hour" in r["picks"]["10.0"]


def test_kws_eval_recorded_voices_needs_the_cap_and_known_voices(tmp_path, capsys):
    from essm_stream.cli import main
    base = ["kws-eval", "--loso", "--hold-out", J_SPEC, "--sets", str(tmp_path), "--models", str(tmp_path),
            "--out", str(tmp_path / "o")]
    assert main(base + ["--recorded-voices", SLT]) == 2 and "--recorded-fa-target" in capsys.readouterr().out
    assert main(base + ["--recorded-fa-target", "2", "--recorded-voices", "espeak:m1"]) == 2
    assert "--recorded-voices" in capsys.readouterr().out
