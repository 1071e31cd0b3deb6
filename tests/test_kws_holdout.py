"""Speaker folds (held-out voices instead of a whole family): names, splits, and the places that must
keep a held-out speaker out of training (babble, rendered voices) or read its extra held-out banks."""
import subprocess
import sys

import numpy as np
import pytest

from essm_stream.errors import ConfigError
from essm_stream.kws import corpus as C
from essm_stream.kws import loso as L
from essm_stream.kws import render as R
from essm_stream.kws import voices as V

H_VOICES = "festival:ked_diphone,festival:cmu_us_slt_arctic_hts"
H = "ho-festival.ked+festival.slt"


def test_fold_name_is_canonical_for_every_spelling():
    assert V.fold_name(H_VOICES) == H
    assert V.fold_name("festival:cmu_us_slt_arctic_hts, festival:ked_diphone") == H     # order, spaces
    assert V.fold_name("festival.slt,festival.ked") == H
    assert V.fold_name(H) == H
    assert V.fold_name("festival") == "festival"
    assert "_" not in H and V.fold_name("flite:slt") == "ho-flite.slt"          # file-name safe, engine kept apart


@pytest.mark.parametrize("bad", ["festival:nobody", "klingon.kal", "", "ho-", "flite"[:3]])
def test_fold_name_rejects_unknown_voices(bad):
    with pytest.raises(ConfigError) as e:
        V.fold_name(bad)
    assert isinstance(e.value, ValueError)                  # argparse turns it into a one-line exit 2


def test_speaker_fold_holds_out_the_speakers_not_only_the_voices():
    f = V.fold(H)
    assert set(f["test"]) == {"festival:ked_diphone", "festival:cmu_us_slt_arctic_hts"}
    assert f["excluded"] == ("flite:slt",)                  # the same ARCTIC speaker through flite
    recorded = {v for v in f["train"] if V.family_of(v) != "espeak"}
    assert recorded == {"flite:kal", "flite:kal16", "flite:awb", "flite:rms", "festival:kal_diphone"} | \
        {f"festival:{v}" for v in V.FESTIVAL_OTHER}                      # + festival's voices of other languages
    held = {V.speaker_of(v) for v in f["test"]}
    for part in ("train", "val"):
        assert not held & {V.speaker_of(v) for v in f[part]}, part
        assert not set(f[part]) & set(f["excluded"])
    assert set(f["val"]) == set(V.espeak_voices(test_only=True))    # rms trains here, so it cannot validate
    assert not set(f["train"]) & set(f["val"])
    assert set(V.espeak_voices(test_only=False)) <= set(f["train"])


def test_family_folds_are_unchanged_and_seeds_kept():
    f = V.fold("festival")
    assert {v for v in f["train"] if V.family_of(v) != "espeak"} == {"flite:awb"}
    assert "flite:rms" in f["val"] and set(f["excluded"]) == {"flite:kal", "flite:kal16", "flite:slt"}
    for fam, s in L.FAMILY_SEED.items():
        assert V.fold_seed(fam) == s
    assert V.fold_seed(H) == V.fold_seed(H_VOICES) not in L.FAMILY_SEED.values()


def _bank(path, voice, kind, n, value):
    V.save_bank(path, [{"kind": kind, "label": "", "text": "the table", "voice": voice,
                        "audio": np.full(900, value, np.float32)} for _ in range(n)])


def test_babble_never_speaks_a_held_out_speaker(tmp_path):
    (tmp_path / "train").mkdir()
    _bank(tmp_path / "train" / "festival_kal_diphone.npz", "festival:kal_diphone", "neg", 3, 0.1)
    _bank(tmp_path / "train" / "festival_ked_diphone.npz", "festival:ked_diphone", "neg", 3, 0.2)
    _bank(tmp_path / "train" / "festival_cmu_us_slt_arctic_hts.npz", "festival:cmu_us_slt_arctic_hts", "neg", 3, 0.3)
    every = R.babble_pool_from(tmp_path, "festival", n=50)
    assert sorted({float(a[0]) for a in every}) == pytest.approx([0.1, 0.2, 0.3])
    kept = R.babble_pool_from(tmp_path, "festival", n=50, exclude_speakers=("ked", "slt"))
    assert [round(float(a[0]), 3) for a in kept] == [0.1] * 3


def test_render_refuses_a_held_out_speaker_for_training(tmp_path):
    with pytest.raises(ConfigError, match="held-out"):
        R.render_train(tmp_path, tmp_path / "out", voices=["flite:slt"], fold=H)   # slt HTS's speaker via flite


def test_extra_banks_are_read_with_their_voice_only(tmp_path):
    (tmp_path / "eval").mkdir()
    kw = {"kind": "iso", "label": "yes", "text": "yes", "kw_start": 0.0, "kw_end": 0.05}
    for name, voice, n in (("flite_kal.npz", "flite:kal", 2), ("flite_kal.more1.npz", "flite:kal", 3),
                           ("flite_kal16.npz", "flite:kal16", 5), ("flite_kal16.more1.npz", "flite:kal16", 7)):
        V.save_bank(tmp_path / "eval" / name, [dict(kw, voice=voice, audio=np.ones(900, np.float32))] * n)
    assert len(L._items(tmp_path, "eval", ["flite:kal"], ("iso",))) == 5         # not kal16's banks
    assert len(L._items(tmp_path, "eval", ["flite:kal16"], ("iso",))) == 12
    jobs = C.more_jobs(tmp_path, ["festival:ked_diphone"], 2)
    assert [j[0].split("/")[-2:] for j in jobs] == [["eval", "festival_ked_diphone.more2.npz"],
                                                    ["neg", "festival_ked_diphone_m2.npz"]]
    assert jobs[0][3] != C.more_jobs(tmp_path, ["festival:ked_diphone"], 3)[0][3]   # new texts per round


def test_streamtrain_config_takes_held_out_voices():
    pytest.importorskip("torch")
    from essm_stream.kws.streamtrain import StreamTrainConfig
    assert StreamTrainConfig(test_family=H_VOICES).test_family == H
    with pytest.raises(ConfigError):
        StreamTrainConfig(test_family="festival:nobody")


def test_kws_eval_bad_hold_out_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "essm_stream", "kws-eval", "--loso", "--hold-out", "festival:nobody",
                        "--sets", str(tmp_path), "--models", str(tmp_path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "festival:nobody" in r.stdout + r.stderr


def test_babble_falls_back_to_other_families_when_the_fold_leaves_one_voice(tmp_path):
    """festival kal_diphone trains in the ked+slt fold: its family has no other allowed voice, so its
    babble comes from the other families' allowed voices, never from a held-out speaker."""
    (tmp_path / "train").mkdir()
    _bank(tmp_path / "train" / "festival_kal_diphone.npz", "festival:kal_diphone", "neg", 3, 0.1)
    _bank(tmp_path / "train" / "festival_ked_diphone.npz", "festival:ked_diphone", "neg", 3, 0.2)
    _bank(tmp_path / "train" / "flite_slt.npz", "flite:slt", "neg", 3, 0.3)
    _bank(tmp_path / "train" / "flite_awb.npz", "flite:awb", "neg", 3, 0.4)
    skip = ("ked", "slt")
    assert R.babble_pool_from(tmp_path, "festival", exclude_voice="festival:kal_diphone", exclude_speakers=skip) is None
    pool = R.babble_pool_from(tmp_path, None, exclude_voice="festival:kal_diphone", exclude_speakers=skip)
    assert [round(float(a[0]), 3) for a in pool] == [0.4] * 3
    with pytest.raises(ConfigError, match="babble"):
        R.noise_of("babble", 100, np.random.default_rng(0), None)


def test_calib_select_names_a_speaker_fold_and_its_missing_sets(tmp_path, capsys):
    from essm_stream.kws import calib
    with pytest.raises(FileNotFoundError, match=r"val_ho-festival\.ked\+festival\.slt_"):
        calib.select(tmp_path, [], tmp_path / "c", tmp_path / "o.jsonl", family=H_VOICES)
    with pytest.raises(SystemExit) as e:
        calib.main(["select", str(tmp_path), "--family", H_VOICES, "--out", str(tmp_path / "o.jsonl")])
    assert e.value.code == 2 and "val_ho-festival.ked+festival.slt_" in capsys.readouterr().err
