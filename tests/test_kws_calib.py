"""Calibration-round helpers: stream scoring's windowed matching equals the full scan; calib's
perturbed validation items keep their keyword times consistent; the wide speaker draw in render."""
import numpy as np
import pytest

from essm_stream.kws.data import KEYWORDS, Event
from essm_stream.kws.evaluate import TOLERANCE_S, score_stream
from essm_stream.kws.spotter import Detection


def brute(dets, events, tol=TOLERANCE_S):
    kw = [e for e in events if e.label in KEYWORDS]
    used = [False] * len(kw)
    fa = 0
    for d in sorted(dets, key=lambda d: d.time_s):
        for i, e in enumerate(kw):
            if not used[i] and e.label == d.label and e.start_s <= d.time_s <= e.end_s + tol:
                used[i] = True
                break
        else:
            fa += 1
    return sum(used), fa


@pytest.mark.parametrize("seed", range(20))
def test_windowed_matching_equals_full_scan(seed):
    rng = np.random.default_rng(seed)
    t, events = 0.0, []
    for _ in range(60):                                   # overlapping and nested events too
        t += rng.uniform(0.0, 2.0)
        lab = KEYWORDS[rng.integers(3)] if rng.random() < 0.8 else "speech"
        events.append(Event(lab, t, t + rng.uniform(0.1, 3.0)))
    dets = [Detection(KEYWORDS[rng.integers(3)], 1.0, float(rng.uniform(0, t + 5))) for _ in range(120)]
    s, _ = score_stream(dets, events, t + 5)
    assert (s.hits, s.false_accepts) == brute(dets, events)


def test_unordered_events_still_scored():
    ev = [Event("yes", 5.0, 5.5), Event("no", 1.0, 1.4)]
    s, v = score_stream([Detection("no", 1.0, 1.5), Detection("yes", 1.0, 5.6)], ev, 10.0)
    assert (s.hits, s.false_accepts) == (2, 0)


def test_perturbed_items_scale_keyword_times():
    from essm_stream.kws.calib import perturbed
    rng = np.random.default_rng(0)
    x = (0.1 * np.sin(2 * np.pi * 150 * np.arange(16000) / 16000)).astype(np.float32)
    items = [{"audio": x, "kw_start": 0.25, "kw_end": 0.75, "label": "yes"}, {"audio": x, "label": ""}]
    seen_tempo = False
    for _ in range(8):
        out = perturbed(items, rng)
        s = len(out[0]["audio"]) / len(x)
        seen_tempo |= abs(s - 1) > 0.05
        assert out[0]["kw_start"] == pytest.approx(0.25 * s) and out[0]["kw_end"] == pytest.approx(0.75 * s)
        assert "kw_start" not in out[1] and np.isfinite(out[1]["audio"]).all()
    assert seen_tempo                                     # half the draws change tempo


def test_wide_speaker_in_compose_keeps_events_inside_the_audio():
    from essm_stream.kws.render import compose
    rng = np.random.default_rng(1)
    x = (0.1 * np.sin(2 * np.pi * 150 * np.arange(8000) / 16000)).astype(np.float32)
    items = [{"audio": x, "kw_start": 0.1, "kw_end": 0.4, "label": "no"} for _ in range(6)]
    speech, events = compose(items, rng, speaker="wide")
    for lab, st, en in events:
        assert lab == "no" and 0 <= st < en <= len(speech) / 16000
    with pytest.raises(ValueError, match="speaker"):
        compose(items, rng, speaker="bogus")


def test_merge_features_concatenates_streams_with_keyword_offsets(tmp_path):
    from essm_stream.kws.render import merge_features
    from essm_stream.kws.streamtrain import load_streams
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    a.mkdir()
    b.mkdir()
    rng = np.random.default_rng(0)

    def write(d, lens, seed):
        r = np.random.default_rng(seed)
        X = r.standard_normal((sum(lens), 4)).astype(np.float16)
        kw, s = [], 0
        for n in lens:
            kw.append([int(r.integers(10)), s + 2, s + 5])
            s += n
        np.savez(d / "espeak_m1.npz", X=X, y=r.integers(0, 12, sum(lens)).astype(np.int8), kw=np.array(kw),
                 lens=np.array(lens), voice=np.array("espeak:m1"))
    write(a, [20, 30], 1)
    write(b, [25], 2)
    np.savez(a / "flite_rms.npz", X=rng.standard_normal((10, 4)).astype(np.float16), y=np.zeros(10, np.int8),
             kw=np.zeros((0, 3), np.int64), lens=np.array([10]), voice=np.array("flite:rms"))
    assert len(merge_features(out, a, b)) == 2
    merged = load_streams(out, ["espeak:m1"])
    parts = load_streams(a, ["espeak:m1"]) + load_streams(b, ["espeak:m1"])
    assert len(merged) == 3
    for m, p in zip(merged, parts):
        assert np.array_equal(m["X"], p["X"]) and np.array_equal(m["kw"], p["kw"]) and np.array_equal(m["y"], p["y"])
    assert len(load_streams(out, ["flite:rms"])) == 1                # a voice only in the first dir is copied


def test_calibration_rows_pair_validation_and_heldout_at_each_threshold(tmp_path):
    import json

    from essm_stream.kws.calib import calibration_rows
    curve = [{"threshold": t, "hit_rate": 0.1, "fa_per_hour": 10 * (1 - t), "neg_fa_per_hour": 5 * (1 - t)}
             for t in (0.9, 0.95)]
    (tmp_path / "sel.jsonl").write_text(json.dumps({"program": "x/models_d/kws.essm", "curve": curve}) + "\n")
    neg = [{"threshold": 0.9, "fa_per_hour": 3.0, "false_accepts": 3}, {"threshold": 0.95, "fa_per_hour": 1.0,
                                                                        "false_accepts": 1}]
    kw = [{"threshold": 0.9, "hit_rate": 0.3}, {"threshold": 0.95, "hit_rate": 0.2}]
    (tmp_path / "loso.json").write_text(json.dumps({"families": {"festival": {"conditions": {"clean": {
        "K32_neg_curve": neg, "K32_kw_curve": kw}}}}}))
    rows = calibration_rows(tmp_path / "sel.jsonl", "models_d", tmp_path / "loso.json", thresholds=(0.9, 0.95, 0.99))
    assert [r["threshold"] for r in rows] == [0.9, 0.95]
    assert rows[1]["val_neg_fa_per_hour"] == pytest.approx(0.25) and rows[1]["test_neg_fa_per_hour"] == 1.0
    assert rows[0]["test_hit_rate"] == 0.3
    with pytest.raises(FileNotFoundError, match="models_q"):
        calibration_rows(tmp_path / "sel.jsonl", "models_q", tmp_path / "loso.json")
