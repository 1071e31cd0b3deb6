"""The per-speaker threshold budget (issue 9): the q-quantile over validation speakers of keyword-free false
accepts per hour capped beside the pooled cap (loso.pick_threshold speaker_rows), kws-eval / calib select's
flags, and kws-eval's per-held-out-speaker read-out (sums back to the pooled numbers)."""
import shutil

import numpy as np
import pytest

from essm_stream.kws import calib as CAL
from essm_stream.kws import loso as L
from essm_stream.kws import loso_eval as E
from essm_stream.kws.data import Event
from kws_sets import write_feature_set

TH = (0.9, 0.95, 0.99)
# six validation speakers, 1 h of keyword-free speech each: events at each threshold of TH
SPK_EVENTS = {"a": (0, 0, 0), "b": (0, 0, 0), "c": (0, 0, 0), "d": (1, 1, 0), "e": (5, 3, 1), "f": (6, 4, 4)}


def _rows(events, hours=1.0, hits=None, keywords=0):
    hits = hits or (0,) * len(TH)
    return [{"threshold": t, "false_accepts": e, "hours": hours, "hits": h, "keywords": keywords,
             "hit_rate": h / max(1, keywords)} for t, e, h in zip(TH, events, hits)]


def _case():
    kw = _rows((0, 0, 0), 0.5, hits=(50, 40, 20), keywords=100)
    spk = {k: _rows(v) for k, v in SPK_EVENTS.items()}
    pooled = _rows(tuple(sum(v[i] for v in SPK_EVENTS.values()) for i in range(3)), hours=6.0)
    return kw, pooled, spk


def test_quantile_is_the_ceil_q_n_th_smallest_rate():
    assert L.speaker_quantile_rate([5, 1, 3, 2, 4, 0], 0.8) == 4          # ceil(4.8) = 5th of 6: second-worst
    assert L.speaker_quantile_rate(range(8), 0.8) == 6                    # ceil(6.4) = 7th of 8: second-worst
    assert L.speaker_quantile_rate(range(12), 0.8) == 9                   # ceil(9.6) = 10th of 12
    assert L.speaker_quantile_rate(range(10), 0.8) == 7                   # exactly 8th of 10
    assert L.speaker_quantile_rate([3, 7], 1.0) == 7 and L.speaker_quantile_rate([3, 7], 0.01) == 3
    for bad in (0.0, -0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="quantile"):
            L.speaker_quantile_rate([1.0], bad)
    with pytest.raises(ValueError, match="no speakers"):
        L.speaker_quantile_rate([], 0.8)


def test_speaker_cap_picks_higher_threshold_than_the_pooled_cap():
    kw, pooled, spk = _case()
    plain = L.pick_threshold(kw, pooled, 2.0, "neg")
    assert plain["threshold"] == 0.9 and plain["fa_per_hour"] == pytest.approx(2.0)   # pooled 12 / 6 h
    p = L.pick_threshold(kw, pooled, 2.0, "neg", speaker_rows=spk, speaker_cap=2.0)
    # 0.8-quantile of 6 = second-worst speaker: 5, 3, 1 FA/h at 0.9 / 0.95 / 0.99
    assert p["threshold"] == 0.99 and p["speaker_q_fa_per_hour"] == pytest.approx(1.0)
    assert p["speaker_fa_per_hour"]["f"] == pytest.approx(4.0) and p["speaker_quantile"] == 0.8
    assert L.pick_threshold(kw, pooled, 2.0, "neg", speaker_rows=spk, speaker_cap=3.0)["threshold"] == 0.95
    # the recorded guard and the speaker budget hold together
    g = _rows((0, 3, 0), 1.0)
    both = L.pick_threshold(kw, pooled, 2.0, "neg", g, 2.0, speaker_rows=spk, speaker_cap=3.0)
    assert both["threshold"] == 0.99 and both["guard_fa_per_hour"] == 0


def test_fallback_is_the_fewest_quantile_false_accepts():
    kw, pooled, spk = _case()
    p = L.pick_threshold(kw, pooled, 2.0, "neg", speaker_rows=spk, speaker_cap=0.5)   # none reaches 0.5
    assert p["threshold"] == 0.99 and p["speaker_q_fa_per_hour"] == pytest.approx(1.0)
    # the worst speaker (q = 1): 4 FA/h at both 0.95 and 0.99, the pooled rate breaks the tie (0.83 < 1.33)
    w = L.pick_threshold(kw, pooled, 2.0, "neg", speaker_rows=spk, speaker_cap=2.0, speaker_quantile=1.0)
    assert w["threshold"] == 0.99 and w["speaker_q_fa_per_hour"] == pytest.approx(4.0)


def test_misaligned_speaker_rows_raise():
    kw, pooled, spk = _case()
    with pytest.raises(ValueError, match="speaker 'a'"):
        L.pick_threshold(kw, pooled, 2.0, "neg", speaker_rows={**spk, "a": spk["a"][:2]}, speaker_cap=2.0)
    shifted = [dict(r, threshold=r["threshold"] + 0.001) for r in spk["b"]]
    with pytest.raises(ValueError, match="rows differ"):
        L.pick_threshold(kw, pooled, 2.0, "neg", speaker_rows={**spk, "b": shifted}, speaker_cap=2.0)
    with pytest.raises(ValueError, match="speaker_rows"):
        L.pick_threshold(kw, pooled, 2.0, "neg", speaker_rows={}, speaker_cap=2.0)
    with pytest.raises(ValueError, match="quantile"):
        L.pick_threshold(kw, pooled, 2.0, "neg", speaker_rows=spk, speaker_cap=2.0, speaker_quantile=0)


def test_speaker_table_sums_to_the_pooled_numbers():
    sets = [{"meta": {"voices": ["flite:slt"]}}, {"meta": {"voices": ["festival:cmu_us_slt_arctic_hts"]}},
            {"meta": {"voices": ["festival:ked_diphone"]}}, {"meta": {"voices": ["festival:lp_diphone", "flite:awb"]}}]
    kw_per = [_rows((1, 0, 0), 0.1, hits=(7, 5, 2), keywords=10), _rows((0, 0, 0), 0.2, hits=(9, 8, 1), keywords=12),
              _rows((2, 1, 0), 0.1, hits=(3, 3, 3), keywords=5), _rows((0, 0, 0), 0.1, hits=(4, 1, 0), keywords=6)]
    neg_per = [_rows((3, 2, 1), 0.5), _rows((1, 1, 0), 0.25), _rows((4, 0, 0), 1.0), _rows((2, 2, 2), 0.75)]
    by = E.speaker_table(sets, kw_per, sets, neg_per, 0.95)
    slt = [k for k in by if "slt" in k]
    assert len(by) == 3 and len(slt) == 1 and any("+" in k for k in by)    # slt: one person, two engines
    assert by[slt[0]]["hits"] == 13 and by[slt[0]]["fa_neg"] == 3 and by[slt[0]]["neg_hours"] == pytest.approx(0.75)
    pk, pn = E.at_threshold(E.pool_rows(kw_per, TH), 0.95), E.at_threshold(E.pool_rows(neg_per, TH), 0.95)
    assert sum(d["hits"] for d in by.values()) == pk["hits"] and sum(d["keywords"] for d in by.values()) == pk["keywords"]
    assert sum(d["fa_neg"] for d in by.values()) == pn["false_accepts"]
    assert sum(d["neg_hours"] for d in by.values()) == pytest.approx(pn["hours"])
    assert sum(d["fa_in_kw_stream"] for d in by.values()) == pk["false_accepts"]


FOLD = "ho-festival.ked+festival.slt~festival.lp+festival.machac"


def _write(path, voices, seconds, steps, events=(), seed=0):
    F = np.random.default_rng(seed).standard_normal((steps, 96)) * 3
    write_feature_set(path, F, events=events, seconds=seconds, levels=np.full(steps, -20.0),
                      meta={"snr_db": None, "seconds": seconds, "voices": voices})


@pytest.fixture()
def fold(tmp_path):
    from essm_stream.kws.spotter import bundled_program_path

    d = tmp_path / "sets"
    d.mkdir()
    ev = [Event("yes", 5.0 + 3 * i, 5.5 + 3 * i) for i in range(5)]
    _write(d / f"val_{FOLD}_kw_clean.npz", ["festival:lp_diphone", "festival:czech_machac"], 24.0, 300, ev, 1)
    _write(d / f"val_{FOLD}_neg_clean.lp.npz", ["festival:lp_diphone"], 24.0, 300, seed=2)
    _write(d / f"val_{FOLD}_neg_clean.machac.npz", ["festival:czech_machac"], 16.0, 200, seed=3)
    _write(d / f"val_{FOLD}_neg_clean.both.npz", ["festival:lp_diphone", "festival:czech_machac"], 8.0, 100, seed=4)
    for i, v in enumerate(("festival:ked_diphone", "festival:cmu_us_slt_arctic_hts")):
        _write(d / f"test_{FOLD}_kw_clean.{i}.npz", [v], 24.0, 300, ev, 10 + i)
        _write(d / f"test_{FOLD}_neg_clean.{i}.npz", [v], 24.0, 300, seed=20 + i)
    (tmp_path / "m" / FOLD).mkdir(parents=True)
    shutil.copyfile(bundled_program_path(), tmp_path / "m" / FOLD / "kws.essm")
    return d, tmp_path / "m"


def test_kws_eval_splits_validation_and_test_by_speaker(fold):
    d, m = fold
    res = E.run_all(d, m, d.parent / "out", (FOLD,), pocketsphinx=False, fa_target=50.0, fa_on="neg",
                    speaker_fa_target=20.0, speaker_quantile=1.0)
    r = res["families"][FOLD]
    assert sorted(r["val_speakers"]) == ["lp", "machac"]
    assert r["val_speaker_pooled_sets"] == [f"val_{FOLD}_neg_clean.both.npz"]
    assert r["val_speakers"][sorted(r["val_speakers"])[0]]["hours"] > 0
    c = r["conditions"]["clean"]
    by, tot = c["K32_speakers"], c["K32"]
    assert len(by) == 2 and sum(x["hits"] for x in by.values()) == tot["hits"]
    assert sum(x["keywords"] for x in by.values()) == tot["keywords"] == 10
    assert sum(x["fa_neg"] for x in by.values()) == tot["fa_neg"]
    assert sum(x["neg_hours"] for x in by.values()) == pytest.approx(tot["neg_hours"])
    md = (d.parent / "out" / "loso.md").read_text()
    assert "Per held-out speaker, clean" in md and "per-speaker cap" in md
    # calib select's readout takes the same budget on the same sets
    ro = CAL.readout(m / FOLD / "kws.essm", CAL.val_sets(d, FOLD), caps=(50.0,), fa_on="neg", speaker_cap=20.0)
    assert ro["speaker_pooled_sets"] == [f"val_{FOLD}_neg_clean.both.npz"] and len(ro["speaker_hours_neg"]) == 2
    assert "speaker_q_fa_per_hour" in ro["picks"]["50.0"]


def test_pooled_validation_only_cannot_be_split(fold, capsys):
    from essm_stream.cli import main
    d, m = fold
    for p in d.glob(f"val_{FOLD}_neg_clean.[lm]*.npz"):
        p.unlink()
    args = ["kws-eval", "--loso", "--hold-out", FOLD, "--sets", str(d), "--models", str(m), "--out",
            str(d.parent / "o"), "--no-pocketsphinx", "--fa-on", "neg", "--speaker-fa-target", "2"]
    assert main(args) == 2 and "cannot be split" in capsys.readouterr().out


@pytest.mark.parametrize("extra, what", [(["--speaker-fa-target", "-1"], "--speaker-fa-target"),
                                         (["--speaker-fa-target", "nan"], "--speaker-fa-target"),
                                         (["--speaker-fa-target", "2", "--speaker-quantile", "0"], "--speaker-quantile"),
                                         (["--speaker-fa-target", "2", "--speaker-quantile", "1.5"], "--speaker-quantile"),
                                         (["--speaker-quantile", "0.8"], "--speaker-fa-target")])
def test_cli_refuses_bad_speaker_values(tmp_path, capsys, extra, what):
    from essm_stream.cli import main
    base = ["kws-eval", "--loso", "--hold-out", FOLD, "--sets", str(tmp_path), "--models", str(tmp_path),
            "--out", str(tmp_path / "o")]
    assert main(base + extra) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and what in out[0] and out[0].startswith("error:")
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:
        CAL.main(["select", str(tmp_path), "--speaker-cap", "1", "--speaker-quantile", "2"])
    assert e.value.code == 2


def test_kws_eval_speaker_rule_and_readout_with_known_rows(fold, monkeypatch):
    """evaluate_family's wiring with known per-set rows (the engine replaced): the speaker cap moves the
    threshold up from the pooled pick, and the held-out table sums to the pooled K = 32 numbers."""
    d, m = fold
    rate = {"lp": 100.0, "machac": 20.0, "both": 0.0, "0": 60.0, "1": 10.0}     # FA/h per unit of (1 - threshold)

    def fake_rows(prog, spotter, sets, K, thresholds=L.THRESHOLDS):
        out = []
        for s in sets:
            part = s["path"].rsplit(".", 2)[-2]
            kind = s["meta"].get("kind") or ("kw" if "_kw_" in s["path"] else "neg")
            n = 100 if kind == "kw" else 0
            out.append([{"threshold": float(t), "hits": int(n * (1 - t) ** 0.2) if n else 0, "keywords": n,
                         "false_accepts": int(round(rate.get(part, 0.0) * (1 - t) * 10)) if n == 0 else 0,
                         "hours": 1.0, "hit_rate": (1 - t) ** 0.2 if n else 0.0} for t in thresholds])
        return out

    monkeypatch.setattr(E, "essm_set_rows", fake_rows)
    plain = E.evaluate_family(FOLD, d, m / FOLD / "kws.essm", False, 50.0, pocketsphinx=False, gate=False, fa_on="neg")
    r = E.evaluate_family(FOLD, d, m / FOLD / "kws.essm", False, 50.0, pocketsphinx=False, gate=False, fa_on="neg",
                          speaker_fa_target=20.0, speaker_quantile=1.0)
    assert r["threshold"] > plain["threshold"]
    assert r["val_choice"]["speaker_q_fa_per_hour"] <= 20.0 == r["speaker_fa_target"]
    assert round(rate["lp"] * (1 - plain["threshold"]) * 10) > 20.0            # the pooled pick: lp over the cap
    assert sorted(r["val_speakers"]) == sorted(r["val_choice"]["speaker_fa_per_hour"]) == ["lp", "machac"]
    c = r["conditions"]["clean"]
    by, tot = c["K32_speakers"], c["K32"]
    assert sorted(by) == ["ked", "slt"] and tot["fa_neg"] > 0 and tot["hits"] > 0
    for k in ("hits", "keywords", "fa_neg"):
        assert sum(x[k] for x in by.values()) == tot[k]
    assert sum(x["neg_hours"] for x in by.values()) == pytest.approx(tot["neg_hours"])
