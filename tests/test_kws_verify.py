"""The second-stage verifier (kws/verify.py) and kws-eval's cascade (--verify): config checks, the window, the
verifier's answer on espeak-ng clips whose answer is known, the cascade's threshold-pair rows and run_all end to end
on tiny stored sets (verifier scores from the cache, nothing decoded)."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from essm_stream.errors import ConfigError
from essm_stream.kws import data as D
from essm_stream.kws import loso as L
from essm_stream.kws import loso_eval as E
from essm_stream.kws import verify as VF
from essm_stream.kws.data import Event
from tests.kws_sets import write_feature_set


@pytest.mark.parametrize("cfg, what", [
    ("pocketsphinx", "must be a dict"),
    ({"kind": "vosk", "threshold": -0.2}, "kind must be one of"),
    ({"kind": "pocketsphinx"}, "'threshold' is required"),
    ({"kind": "pocketsphinx", "threshold": 0.5}, "threshold must be a finite number in [-5, 0]"),
    ({"kind": "pocketsphinx", "threshold": float("nan")}, "threshold must be a finite number"),
    ({"kind": "pocketsphinx", "threshold": True}, "threshold must be a finite number"),
    ({"kind": "pocketsphinx", "threshold": -0.2, "pre_s": 0}, "pre_s must be > 0"),
    ({"kind": "pocketsphinx", "threshold": -0.2, "post_s": 2}, "post_s must be a finite number in [0, 1]"),
    ({"kind": "pocketsphinx", "threshold": -0.2, "window": 2}, "unknown keys ['window']"),
])
def test_bad_verifier_configs_are_refused_with_the_reason(cfg, what):
    with pytest.raises(ConfigError) as e:
        VF.check_verifier_config(cfg)
    assert what in str(e.value)


def test_config_defaults_and_window_bounds():
    c = VF.check_verifier_config({"kind": "pocketsphinx", "threshold": -0.16})
    assert c == {"kind": "pocketsphinx", "threshold": -0.16, "pre_s": VF.WINDOW_PRE_S, "post_s": VF.WINDOW_POST_S}
    assert VF.window_bounds(2.0, 1.6, 0.1, 16000) == (6400, 33600)
    assert VF.window_bounds(1.0, 1.6, 0.1, 16000, n=10000) == (0, 10000)          # clipped to the stream


def test_parse_thresholds():
    assert VF.parse_thresholds("none, -0.2,-0.15") == [None, -0.2, -0.15]
    for bad in ("", "x", "0.3", "-9"):
        with pytest.raises(ValueError):
            VF.parse_thresholds(bad)


def test_missing_pocketsphinx_is_a_clear_error(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_ps(name, *a, **k):
        if name == "pocketsphinx":
            raise ImportError("No module named 'pocketsphinx'")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_ps)
    with pytest.raises(VF.VerifierUnavailable, match="pip install pocketsphinx"):
        VF.PocketsphinxVerifier(-0.16)


def _espeak(text):
    """espeak-ng's default voice saying `text`, 16 kHz float."""
    import io

    import soundfile as sf
    from scipy.signal import resample_poly
    wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(wav))
    return resample_poly(x, 16000, sr) if sr != 16000 else x


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_the_verifier_accepts_a_said_keyword_and_rejects_another_word():
    pytest.importorskip("pocketsphinx")
    v = VF.PocketsphinxVerifier(-0.16)
    said, other = _espeak("I said yes today"), _espeak("I said dawn today")
    s_yes, s_other = v.score(said, "yes"), v.score(other, "yes")
    assert s_yes > s_other
    assert v.accept(said, "yes") and not v.accept(other, "yes")
    assert abs(v.score(said, "yes") - s_yes) < 2e-3            # pocketsphinx's CMN update: a few 1e-4 of history
    assert v.score(np.zeros(16000), "yes") == VF.SCORE_NONE   # silence
    with pytest.raises(ConfigError, match="not one of the keywords"):
        v.score(said, "maybe")
    with pytest.raises(ConfigError, match="1-D"):
        v.score(np.zeros((100, 2)), "yes")


def _set(path, steps, spike, events, seconds):
    """Stored set whose features tell the fake engine (below) where to spike the keyword `yes`."""
    F = np.full((steps, 96), -1.0, np.float32)
    if spike:
        a, b = spike
        F[a:b, 0] = 1.0
    write_feature_set(path, F, events=events, seconds=seconds)


@pytest.fixture
def fake_engine(monkeypatch):
    """The engine replaced by a rule: 'yes' wherever feature 0 is positive, silence elsewhere (no gate)."""
    yes = D.LABELS.index("yes")

    def fake_outputs(prog, F, K, chunk=4096):
        Y = np.zeros((len(F), len(D.LABELS)), np.float32)
        Y[:, D.SILENCE] = 8.0
        Y[F[:, 0] > 0, yes] = 12.0
        return Y
    monkeypatch.setattr(L, "engine_outputs", fake_outputs)
    monkeypatch.setattr(L, "normalise", lambda prog, F: np.asarray(F, np.float32))
    monkeypatch.setattr(L, "vad_active", lambda sp, lv, t: np.ones(len(lv), bool))


def test_cascade_rows_keep_only_verified_detections(tmp_path, fake_engine):
    """Two first-stage detections of 'yes' (one true, one a false accept); the verifier's cached scores pass the
    true one only at -0.2: rows for (th1, None) count both, (th1, -0.2) only the hit."""
    p = tmp_path / "test_f_kw_clean.npz"
    _set(p, 300, None, [Event("yes", 5.0, 5.5)], 25.0)
    z = dict(np.load(p))
    z["F"][60:62, 0] = 1.0        # t = 0.78 + 0.08 * 60 = 5.58 s: the keyword
    z["F"][200:202, 0] = 1.0      # 16.78 s: a false accept
    np.savez(p, **z)
    s = L.load_set(p)
    cfg = VF.check_verifier_config({"kind": "pocketsphinx", "threshold": -1.0})
    cache = tmp_path / "vc"
    f = E._vcache_file(cache, s, cfg)
    f.parent.mkdir()
    f.write_text(json.dumps({"samples": len(s["pcm"]), "scores": [["yes", 5.58, -0.15], ["yes", 16.78, -0.25]]}))
    from essm_stream.kws.spotter import KeywordSpotter, bundled_program_path
    sp = KeywordSpotter(bundled_program_path())
    pairs = [(0.9, None), (0.9, -0.2), (0.9, -0.1)]
    rows, = E.cascade_set_rows(sp.program, sp, [s], 32, cfg, pairs, workers=1, cache_dir=cache)
    assert [(r["hits"], r["false_accepts"]) for r in rows] == [(1, 1), (1, 0), (0, 0)]
    assert [r["threshold"] for r in rows] == [0.0, 1.0, 2.0] and rows[1]["vth"] == -0.2


def test_run_all_with_a_cascade_from_cached_scores(tmp_path, monkeypatch, fake_engine):
    """run_all --verify end to end on tiny sets: validation has a keyword and a false accept the verifier rejects;
    the pair rule picks a verifier threshold that removes it; loso.md carries the cascade's rows."""
    from essm_stream.kws.spotter import bundled_program_path
    monkeypatch.setattr(E, "frontend_costs", lambda: {})
    fam, sets = "ho-x", tmp_path / "sets"
    sets.mkdir()
    for split in ("val", "test"):
        _set(sets / f"{split}_{fam}_kw_clean.npz", 300, (60, 62), [Event("yes", 5.0, 5.5)], 25.0)
        _set(sets / f"{split}_{fam}_neg_clean.npz", 300, (100, 102), [], 25.0)
    (tmp_path / "M" / fam).mkdir(parents=True)
    shutil.copyfile(bundled_program_path(), tmp_path / "M" / fam / "kws.essm")
    out = tmp_path / "out"
    out.mkdir()
    (out / f"extras_{fam}.json").write_text(json.dumps({"old": {}}))
    cfg = VF.check_verifier_config({"kind": "pocketsphinx", "threshold": -1.0})
    for split in ("val", "test"):
        for kind, t, sc in (("kw", 5.58, -0.14), ("neg", 8.78, -0.21)):
            s = L.load_set(sets / f"{split}_{fam}_{kind}_clean.npz")
            f = E._vcache_file(out / "verify_cache", s, cfg)
            f.parent.mkdir(exist_ok=True)
            f.write_text(json.dumps({"samples": len(s["pcm"]), "scores": [["yes", t, sc]]}))
    res = E.run_all(sets, ["M=" + str(tmp_path / "M")], out, (fam,), pocketsphinx=False, fa_target=10.0,
                    fa_on="neg", verify={"kind": "pocketsphinx", "thresholds": [None, -0.2], "workers": 1})
    cz = res["families"][fam]["cascades"]["M"]
    assert cz["vth"] == -0.2 and cz["conditions"]["clean"]["hits"] == 1 and cz["conditions"]["clean"]["fa_neg"] == 0
    assert res["families"][fam]["conditions"]["clean"]["K32"]["hits"] == 0      # plain: only a threshold above both
    assert "cascade M + pocketsphinx verifier" in (out / "loso.md").read_text()


def test_kws_eval_verify_options_are_checked(tmp_path):
    from essm_stream.cli import main
    assert main(["kws-eval", "--loso", "--verify-thresholds", "-0.2", "--out", str(tmp_path / "o")]) == 2
    assert main(["kws-eval", "--loso", "--verify", "pocketsphinx", "--verify-thresholds", "0.5",
                 "--out", str(tmp_path / "o")]) == 2


def test_cascade_frontier_is_the_best_pair_at_each_rate():
    kw = [{"hit_rate": h} for h in (0.5, 0.3, 0.6, 0.2)]
    neg = [{"false_accepts": f, "hours": 1.0} for f in (4, 1, 9, 0)]
    fa, hr = E.cascade_frontier(kw, neg)
    assert fa.tolist() == [0, 1, 4, 9] and hr.tolist() == [0.2, 0.3, 0.5, 0.6]
