"""Leave-one-synthesizer-out pieces: speaker-disjoint folds, stream targets, threshold choice,
scoring of pocketsphinx-style detections, and (with the synthesizers) a tiny bank -> set round trip."""
import shutil

import numpy as np
import pytest

from essm_stream.kws import data as D
from essm_stream.kws import loso as L
from essm_stream.kws import render as R
from essm_stream.kws import voices as V


@pytest.mark.parametrize("family", V.FAMILIES)
def test_folds_keep_test_speakers_out(family):
    f = V.fold(family)
    test_speakers = {V.speaker_of(v) for v in f["test"]}
    assert f["test"] and f["train"] and f["val"]
    for part in ("train", "val"):
        assert not test_speakers & {V.speaker_of(v) for v in f[part]}, part
        assert all(V.family_of(v) != family for v in f[part])
    assert not set(f["train"]) & set(f["val"])
    # the same person through another engine is a test speaker too: kal (flite) vs kal_diphone (festival)
    if family == "festival":
        assert "flite:kal" not in f["train"] and "flite:slt" not in f["train"]


def test_negative_vocabulary_has_no_keyword_or_homophone():
    bad = set(D.KEYWORDS) | {"know", "write", "rite"}
    assert not bad & set(V.NEG_WORDS)
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert not bad & set(V.negative_sentence(rng).split())


def test_step_targets_windows_and_ignore_zone():
    hop = 0.08
    end_time = lambda i: 0.78 + hop * i  # noqa: E731
    speech = np.zeros(16000 * 10)
    speech[int(2.0 * 16000):int(2.5 * 16000)] = 0.5          # "left" 2.0-2.5 s
    speech[int(6.0 * 16000):int(7.0 * 16000)] = 0.5          # other speech
    ev = [("left", 2.0, 2.5), ("speech", 6.0, 7.0)]
    n = int((10 - 0.78) / hop)
    y, kw = R.step_targets(ev, speech, n, end_time)
    t = np.array([end_time(i) for i in range(n)])
    assert kw.shape == (1, 3) and kw[0, 0] == D.KEYWORDS.index("left")
    assert t[kw[0, 1]] >= 2.5 - 0.08 - 1e-9 and t[kw[0, 2]] <= 2.5 + 0.8 + 1e-9
    assert (y[(t >= 2.0) & (t <= 3.5)] == -1).all()
    assert (y[(t > 6.1) & (t < 7.0)] == D.UNKNOWN).all()
    assert (y[(t > 4.2) & (t < 5.9)] == D.SILENCE).all()


def test_pick_threshold_meets_target_or_says_fewest():
    kw = [{"threshold": th, "hit_rate": h, "hits": 0, "false_accepts": fa, "hours": 0.5}
          for th, h, fa in ((0.5, 0.9, 4), (0.7, 0.8, 1), (0.9, 0.6, 0))]
    neg = [{"threshold": th, "false_accepts": fa, "hours": 0.5} for th, fa in ((0.5, 6), (0.7, 1), (0.9, 0))]
    assert L.pick_threshold(kw, neg, fa_target=2.0)["threshold"] == 0.7     # 2 FA in 1 h
    assert L.pick_threshold(kw, neg, fa_target=0.5)["threshold"] == 0.9
    none = [dict(r, false_accepts=9) for r in neg]
    assert L.pick_threshold(kw, none, fa_target=0.1)["threshold"] == 0.9    # fewest when none reaches it


def test_pick_threshold_fa_on_keyword_free_only_differs_from_pooled():
    # validation keyword streams full of confusions (a wrong keyword fires at low thresholds), keyword-free
    # speech almost clean: the pooled budget is driven by the confusions, the keyword-free one is not
    ths = (0.5, 0.7, 0.9, 0.99)
    kw = [{"threshold": th, "hit_rate": h, "hits": 0, "false_accepts": fa, "hours": 1.0}
          for th, h, fa in zip(ths, (0.8, 0.6, 0.4, 0.1), (60, 30, 12, 1))]
    neg = [{"threshold": th, "hit_rate": 0.0, "hits": 0, "false_accepts": fa, "hours": 4.0}
           for th, fa in zip(ths, (80, 8, 4, 0))]
    old = L.pick_threshold(kw, neg, fa_target=3.0)              # pooled: 7.6 at 0.7, 3.2 at 0.9, 0.2 at 0.99
    new = L.pick_threshold(kw, neg, fa_target=3.0, fa_on="neg")  # keyword-free: 20 at 0.5, 2 at 0.7
    assert old["threshold"] == 0.99 and new["threshold"] == 0.7
    assert old["fa_per_hour"] == pytest.approx(0.2) and old["hit_rate"] == 0.1
    assert new["fa_per_hour"] == pytest.approx(2.0) and new["neg_fa_per_hour"] == pytest.approx(2.0)
    # the confusions are reported beside the pick, not dropped
    assert new["kw_fa_per_hour"] == pytest.approx(30.0) and new["pooled_fa_per_hour"] == pytest.approx(38 / 5)
    assert old["fa_on"] == "all" and new["fa_on"] == "neg"
    with pytest.raises(ValueError, match="fa_on"):
        L.pick_threshold(kw, neg, 3.0, fa_on="kw")
    with pytest.raises(ValueError, match="differ"):
        L.pick_threshold(kw, neg[::-1], 3.0)


def test_perturbations_keep_shape_and_finite():
    rng = np.random.default_rng(1)
    x = np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
    for f in (R.mic_response, R.agc):
        y = f(x, rng)
        assert y.shape == x.shape and np.isfinite(y).all()
    assert R.round_trip(x).shape == x.shape
    assert np.isfinite(R.nonstationary(16000, rng)).all()
    y = R.mix_at_snr(x, rng.standard_normal(len(x)), 10.0)
    noise = y - x
    assert 10 * np.log10(np.mean(x ** 2) / np.mean(noise ** 2)) == pytest.approx(10.0, abs=0.1)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed (scripts/kws_install_system.sh)")
def test_tiny_bank_and_set_round_trip(tmp_path):
    pytest.importorskip("openwakeword")
    jobs = V.plan("flite:kal16", 1, 1, 0, 1, seed=0)[:2] + V.plan("flite:kal16", 1, 1, 0, 1, seed=0)[-1:]
    items = V.render_voice("flite:kal16", jobs, seed=1)
    assert {j["kind"] for j in items} == {"iso", "sent", "neg"}
    sent = [j for j in items if j["kind"] == "sent"][0]
    assert 0 <= sent["kw_start"] < sent["kw_end"] <= len(sent["audio"]) / 16000 + 1e-6
    V.save_bank(tmp_path / "b.npz", items)
    back = V.load_bank(tmp_path / "b.npz")
    assert [j["text"] for j in back] == [j["text"] for j in items]
    kw = [j for j in back if j["label"]]
    neg = [j for j in back if not j["label"]]
    L.build_sets(tmp_path, tmp_path / "sets", "t", kw, neg, None, seed=0, snrs=(None, 10.0))
    s = L.load_set(tmp_path / "sets" / "t_kw_10dB.npz")
    assert s["meta"]["keywords"] == len(kw) and len(s["F"]) == len(s["levels"]) == len(s["times"])
    assert s["pcm"].dtype == np.int16 and s["F"].shape[1] == 96


def test_kws_eval_loso_without_models_exits_2(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "essm_stream", "kws-eval", "--loso", "--sets", str(tmp_path),
                        "--models", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--no-pocketsphinx"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no fold" in r.stdout + r.stderr


def test_streamtrain_extend_resumes_a_finished_run(tmp_path):
    """--extend 1 continues a finished run: weights and step resumed, the wall-time budget restarted
    (a finished run's clock would otherwise stop it at once), mined anchors dropped."""
    pytest.importorskip("torch")
    from essm_stream.checkpoint import load_checkpoint
    from essm_stream.kws import streamtrain as S

    from kws_sets import write_training_streams

    fold = V.fold("festival")
    write_training_streams(tmp_path / "feats" / "embedding", (fold["train"][0], fold["val"][0]))
    small = dict(test_family="festival", d_model=8, d_gate=8, k_max=4, seq_len=8, crop=16, batch_size=4,
                 warmup_steps=2, eval_every=100, mine_every=100, ckpt_every=100)
    out = tmp_path / "m"
    step = lambda: load_checkpoint(out / "last.safetensors")[1]["train"]["step"]   # noqa: E731
    S.train_fold(tmp_path / "feats", out, S.StreamTrainConfig(steps=5, max_minutes=1e-9, **small))
    assert step() == 1                                      # the tiny budget stopped it after one step
    S.train_fold(tmp_path / "feats", out, S.StreamTrainConfig(steps=5, max_minutes=10, **small))
    assert step() == 2                                      # plain resume: the budget is still spent
    S.train_fold(tmp_path / "feats", out, S.StreamTrainConfig(steps=5, max_minutes=10, extend=1, **small))
    assert step() == 5


def test_load_condition_pairs_keyword_and_negative_sets(tmp_path):
    """kws-eval and the TC-ResNet8 stream baseline read a condition's sets through one function."""
    import json

    import numpy as np

    from essm_stream.kws.loso import load_condition

    def write(name, events):
        np.savez(tmp_path / name, pcm=np.zeros(160, np.int16), events=np.array(json.dumps(events)),
                 meta=np.array(json.dumps({"snr_db": 10})))

    write("test_festival_kw_10dB.npz", [["yes", 0.1, 0.4]])
    write("test_festival_neg_10dB.npz", [])
    write("test_flite_kw_10dB.npz", [["no", 0.1, 0.4]])
    kw, neg = load_condition(tmp_path, "test", "festival", "10dB")
    assert [e.label for s in kw for e in s["events"]] == ["yes"]
    assert len(neg) == 1 and neg[0]["events"] == [] and neg[0]["meta"]["snr_db"] == 10
    assert load_condition(tmp_path, "test", "festival", "clean") == ([], [])


def test_loso_markdown_names_the_rule_and_reports_confusions():
    from essm_stream.kws import loso_eval as LE

    def cond(hits, fa_kw):
        k = {"hit_rate": hits / 300, "hits": hits, "keywords": 300, "fa_neg": 1, "neg_hours": 1.0,
             "fa_per_hour_neg": 1.0, "fa_in_kw_stream": fa_kw, "kw_hours": 0.25}
        curve = [{"threshold": 0.9, "hit_rate": hits / 300, "hits": hits, "keywords": 300, "false_accepts": 1,
                  "hours": 1.0}]
        return {"K32": k, "K4": dict(k), "K32_kw_curve": curve, "K4_kw_curve": curve,
                "K32_neg_curve": curve, "K4_neg_curve": curve}
    choice = {"threshold": 0.9, "hit_rate": 0.3, "fa_per_hour": 8.0, "fa_on": "neg", "neg_fa_per_hour": 8.0,
              "kw_fa_per_hour": 24.0, "pooled_fa_per_hour": 12.0}
    res = {"fa_target": 10.0, "fa_on": "neg", "families": {"flite": {
        "threshold": 0.9, "val_choice": choice, "val_hours": 2.0, "fa_on": "neg",
        "conditions": {"clean": cond(90, 3), "10dB": cond(60, 5)}}}}
    md = LE.markdown(res)
    assert "keyword-free validation speech only, <= 10 FA/h" in md
    assert "inside keyword streams (confusions) 24.0 FA/h" in md
    assert "| ES-SSM K=32: false accepts inside keyword streams (confusions), per hour of them | 12.0 (3) | 20.0 (5) |" in md
    res["families"]["flite"]["fa_on"] = "all"
    assert "validation keyword + keyword-free streams" in LE.markdown(res)
    assert "| DET read-out, K=4: found at <= 2 / 10 / 50 FA/h | 30% / 30% / 30% | 20% / 20% / 20% |" in md
    assert "each K at its own threshold; finer grid and intervals: diagnose det-k) | 100% / 100% / 100% |" in md
    c = res["families"]["flite"]["conditions"]["clean"]                   # K=4 finds 45 at 1 FA/h, K=32 90
    c["K4_kw_curve"] = [dict(c["K4_kw_curve"][0], hits=45, hit_rate=0.15)]
    assert "diagnose det-k) | 50% / 50% / 50% | 100% / 100% / 100% |" in LE.markdown(res)


def test_det_point_reads_each_curve_at_its_own_threshold_under_the_cap():
    """The DET read-out behind kws-eval's rows and diagnose det-k: most hits among thresholds whose
    keyword-free FA/h <= cap (ties: fewer false accepts), nothing when no threshold fits, and rows of
    two different sweeps refused."""
    from essm_stream.kws.loso_eval import det_point

    ths = (0.5, 0.8, 0.9, 0.99)
    hits, fas = (50, 40, 40, 10), (30, 6, 4, 1)          # 2 h of keyword-free speech
    kw = [{"threshold": t, "hits": h, "keywords": 100, "hit_rate": h / 100, "false_accepts": 0, "hours": 0.5}
          for t, h in zip(ths, hits)]
    neg = [{"threshold": t, "hits": 0, "keywords": 0, "hit_rate": 0.0, "false_accepts": f, "hours": 2.0}
           for t, f in zip(ths, fas)]
    p = det_point(kw, neg, 3.0)                           # 0.8 (3 FA/h) and 0.9 (2 FA/h) tie at 40 hits
    assert (p["threshold"], p["hits"], p["false_accepts"], p["fa_per_hour"]) == (0.9, 40, 4, 2.0)
    assert det_point(kw, neg, 15.0)["threshold"] == 0.5 and det_point(kw, neg, 0.5)["threshold"] == 0.99
    none = det_point(kw, neg, 0.1)
    assert none["threshold"] is None and none["hits"] == 0 and none["keywords"] == 100 and none["hours"] == 2.0
    with pytest.raises(ValueError, match="same threshold sweep"):
        det_point(kw, neg[::-1], 3.0)
