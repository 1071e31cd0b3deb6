"""festival's voices of other languages as speakers (issue 9, run I): their folds, the keywords they say
(respellings checked by pocketsphinx, kws/respell.py), and the second validation cap on recorded voices."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from essm_stream.errors import ConfigError
from essm_stream.kws import calib as CAL
from essm_stream.kws import data as D
from essm_stream.kws import loso as L
from essm_stream.kws import render as R
from essm_stream.kws import respell as RS
from essm_stream.kws import voices as V

H = "ho-festival.ked+festival.slt"
I_SPEC = ("festival:ked_diphone,festival:cmu_us_slt_arctic_hts~festival:lp_diphone,festival:czech_machac,"
          "festival:hy_fi_mv_diphone")
I_NAME = "ho-festival.ked+festival.slt~festival.lp+festival.machac+festival.mv"
TABLE = json.loads((Path(RS.__file__).with_name("respell.json")).read_text(encoding="utf-8"))


def test_new_voices_are_festival_speakers_with_tokens():
    for v, (lang, spk, pkg) in V.FESTIVAL_OTHER.items():
        voice = f"festival:{v}"
        assert voice in V.family_voices("festival") and V.speaker_of(voice) == spk
        assert V.language_of(voice) == lang != "en" and pkg.startswith("festvox-")
        assert V.fold_name(voice) == f"ho-festival.{spk}"                    # a speaker fold can name each one
    assert len({V.speaker_of(f"festival:{v}") for v in V.FESTIVAL_OTHER}) == len(V.FESTIVAL_OTHER)
    assert V.language_of("festival:ked_diphone") == V.language_of("flite:awb") == "en"
    script = (Path(__file__).parents[1] / "scripts" / "kws_install_system.sh").read_text()
    for _, _, pkg in V.FESTIVAL_OTHER.values():
        assert pkg in script


def test_fold_with_recorded_validation_speakers():
    assert V.fold_name(I_SPEC) == I_NAME == V.fold_name(I_NAME)
    assert V.fold_name("festival.slt,festival.ked~festival.mv,festival.lp,festival.machac") == I_NAME   # any order
    f, h = V.fold(I_NAME), V.fold(H)
    assert f["test"] == h["test"] and f["excluded"] == h["excluded"] == ("flite:slt",)
    rec_val = {v for v in f["val"] if V.family_of(v) != "espeak"}
    assert rec_val == {"festival:lp_diphone", "festival:czech_machac", "festival:hy_fi_mv_diphone"}
    assert set(V.espeak_voices(test_only=True)) <= set(f["val"])
    assert not set(f["train"]) & set(f["val"]) and not set(f["train"]) & set(f["test"])
    assert set(f["train"]) == set(h["train"]) - rec_val                      # H's training minus the validators
    assert {"festival:pc_diphone", "festival:upc_ca_ona_hts"} <= set(f["train"])
    assert V.fold_seed(I_NAME) != V.fold_seed(H)


@pytest.mark.parametrize("bad", [H + "~festival.ked",          # a held-out speaker cannot validate
                                 H + "~espeak.m1",             # nor an espeak-ng variant (they validate anyway)
                                 H + "~festival.nobody", H + "~"])
def test_fold_rejects_bad_validation_voices(bad):
    with pytest.raises(ConfigError):
        V.fold_name(bad)


def test_render_keeps_validation_speakers_out_of_training(tmp_path):
    with pytest.raises(ConfigError, match="validation"):
        R.render_train(tmp_path, tmp_path / "out", voices=["festival:lp_diphone"], fold=I_NAME)


def test_spoken_forms_follow_the_checked_table():
    assert V.spoken_form("festival:ked_diphone", "left") == "left"
    assert V.keywords_of("flite:awb") == tuple(D.KEYWORDS)
    for v, kws in TABLE["voices"].items():
        for k, r in kws.items():
            assert V.spoken_form(f"festival:{v}", k) == (r["spelling"] if r["pass"] else None)
            assert r["pass"] == (r["rate"] >= RS.PASS_RATE) and len(r["check"]) == RS.CHECK_N
    dropped = [k for k in D.KEYWORDS if not TABLE["voices"]["pc_diphone"][k]["pass"]]
    assert dropped and not set(dropped) & set(V.keywords_of("festival:pc_diphone"))


def test_plan_never_labels_a_keyword_the_voice_cannot_say():
    voice = "festival:pc_diphone"
    jobs = V.plan(voice, 2, 2, 3, 3, seed=1)
    said = set(V.keywords_of(voice))
    labels = {j["label"] for j in jobs if j["label"]}
    assert labels == said
    for j in jobs:
        if j["kind"] == "iso":
            assert j["text"] == V.spoken_form(voice, j["label"])
        if j["kind"] == "sent":
            assert V.spoken_form(voice, j["label"]) in j["text"].split()
    eng = V.plan("festival:kal_diphone", 2, 2, 3, 3, seed=1)
    assert all(j["text"] == j["label"] and "spoken" not in j for j in eng if j["kind"] == "iso")
    # the English voices' texts are what they were before respellings existed (the same draws, in order)
    sent_eng = [j["text"] for j in eng if j["kind"] == "sent"]
    assert len(sent_eng) == 2 * len(D.KEYWORDS)


def test_pick_threshold_with_a_recorded_cap():
    th = [0.5, 0.7, 0.9]
    kw = [{"threshold": t, "hit_rate": h, "false_accepts": 0, "hours": 1.0} for t, h in zip(th, (0.6, 0.5, 0.3))]
    neg = [{"threshold": t, "false_accepts": f, "hours": 1.0} for t, f in zip(th, (8, 4, 1))]
    rec = [{"threshold": t, "false_accepts": f, "hours": 2.0} for t, f in zip(th, (10, 6, 2))]   # 5, 3, 1 /h
    assert L.pick_threshold(kw, neg, 10, "neg")["threshold"] == 0.5
    p = L.pick_threshold(kw, neg, 10, "neg", rec, 2.0)
    assert p["threshold"] == 0.9 and p["guard_fa_per_hour"] == pytest.approx(1.0)
    fb = L.pick_threshold(kw, neg, 10, "neg", rec, 0.5)          # no threshold meets it: fewest recorded FA/h
    assert fb["threshold"] == 0.9
    with pytest.raises(ValueError):
        L.pick_threshold(kw, neg, 10, "neg", rec[:2], 2.0)
    assert L.is_recorded(["festival:lp_diphone", "flite:awb"]) and not L.is_recorded(["espeak:m1", "flite:awb"])
    assert not L.is_recorded([])


def test_calibration_tags_are_checked():
    with pytest.raises(ValueError, match="tags"):
        CAL.build_calib_sets("x", "y", I_NAME, tags=("cz",))
    assert CAL.TAG_GROUPS["f"] == ("festival", "neg") and CAL.TAG_GROUPS["g"] == ("festival", "kw")


def test_summary_table_marks_failed_pairs():
    t = {"voices": {"xx": {k: {"spelling": k, "rate": 0.2 if k == "up" else 1.0, "pass": k != "up"}
                           for k in D.KEYWORDS}}}
    md = RS.summary_md(t)
    assert "~~up 20%~~" in md and "| 9/10 |" in md


needs_festival = pytest.mark.skipif(shutil.which("festival") is None or not V.festival_voice_installed("lp_diphone")
                                    or not V.festival_voice_installed("msu_ru_nsh_clunits"),
                                    reason="festival or its lp / Russian voices not installed")


@needs_festival
def test_respelled_keywords_get_their_word_times():
    (a, words), = V.festival_batch("lp_diphone", [("the kitchen rait table", 1.0)], words=True)
    assert [w for w, _ in words] == ["the", "kitchen", "rait", "table"] and len(a) > 8000
    (b, wr), = V.festival_batch("msu_ru_nsh_clunits", [("йес", 1.0)], words=True)
    assert [w for w, _ in wr] == ["йес"] and len(b) > 1600            # Cyrillic through the UTF-8 job file
    items = V.render_voice("festival:lp_diphone", [{"kind": "sent", "label": "right", "spoken": "rait",
                                                    "prefix": "the kitchen", "text": "the kitchen rait table"}], 3)
    j, = items
    assert 0.2 < j["kw_start"] < j["kw_end"] < len(j["audio"]) / D.SR


@needs_festival
def test_forced_choice_hears_a_native_keyword():
    pytest.importorskip("pocketsphinx")
    fc = RS.ForcedChoice()
    (a, _), = V.festival_batch("kal_diphone", [("left", 1.0)])
    assert fc(a) == "left"
    assert fc(np.zeros(1600)) in (None,) + tuple(D.KEYWORDS)       # silence: no crash, a word or none


def test_kws_eval_rejects_a_negative_recorded_cap(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "essm_stream", "kws-eval", "--loso", "--hold-out", I_SPEC,
                        "--recorded-fa-target", "-1", "--sets", str(tmp_path), "--models", str(tmp_path),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--recorded-fa-target" in r.stdout + r.stderr
