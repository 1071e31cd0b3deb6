"""kws-eval --loso as one run with its peers: several ES-SSM programs in one table, TC-ResNet8 under the
ES-SSM's threshold rule, pocketsphinx's detections cached per set file (so a later run decodes only new
sets) or its threshold given, every test condition of the sets folder in the table and the DET plot."""
import json

import numpy as np
import pytest

from essm_stream.kws import data as D
from essm_stream.kws import loso as L
from essm_stream.kws import loso_eval as E
from essm_stream.kws.data import Event
from kws_sets import write_feature_set


def _set(path, seconds, events):
    return {"path": str(path), "pcm": np.zeros(int(seconds * 16000), np.int16), "events": events, "meta": {}}


def test_ps_sweep_reads_and_writes_its_cache(tmp_path, monkeypatch):
    calls = []

    def fake(pcm, th, refractory_s=1.0):
        from essm_stream.kws.spotter import Detection
        calls.append((len(pcm), th))
        return [Detection("yes", 1.0, 2.0), Detection("no", 1.0, 9.0)] if th < 5 else []

    monkeypatch.setattr(E, "pocketsphinx_detections", fake)
    sets = [_set(tmp_path / "test_f_kw_clean.npz", 20.0, [Event("yes", 1.5, 1.9)]),
            _set(tmp_path / "test_f_neg_clean.npz", 30.0, [])]
    cache = tmp_path / "cache"
    rows = E.ps_sweep(sets, (1.0, 10.0), workers=1, cache_dir=cache)
    assert len(calls) == 4 and len(list(cache.glob("*.json"))) == 4
    assert (rows[0]["hits"], rows[0]["keywords"], rows[0]["false_accepts"]) == (1, 1, 3)   # "no" in both, "yes" in neg
    assert (rows[1]["hits"], rows[1]["false_accepts"]) == (0, 0)
    assert E.ps_sweep(sets, (1.0, 10.0), workers=1, cache_dir=cache) == rows and len(calls) == 4   # all cached
    E.ps_sweep(sets, (1.0,), workers=1, cache_dir=cache, limit_s=5.0)          # another cut: decoded, events cut
    assert calls[4:] == [(80000, 1.0), (80000, 1.0)]
    sets[1]["pcm"] = np.zeros(16000 * 40, np.int16)                            # rebuilt under the same name
    E.ps_sweep(sets, (1.0,), workers=1, cache_dir=cache)
    assert calls[6:] == [(640000, 1.0)]
    j = json.loads((cache / "test_f_neg_clean__1__all.json").read_text())
    assert j["samples"] == 640000 and j["detections"] == [["yes", 2.0], ["no", 9.0]]


def _write_set(path, steps, spikes, events, seconds=None):
    """A stored stream set whose features carry, per step, the class a fake model should spike (-1: none)."""
    F = np.full((steps, 96), -1.0, np.float32)
    for a, b, c, _ in spikes:
        F[a:b, 0] = c
        F[a:b, 1] = _
    write_feature_set(path, F, events=events, seconds=seconds)


class _Fake:
    """outputs(F): logits whose softmax puts probability F[:,1] on class F[:,0] (background elsewhere)."""

    def outputs(self, F):
        Y = np.zeros((len(F), len(D.LABELS)), np.float32)
        Y[:, D.SILENCE] = 5.0
        for i in np.nonzero(F[:, 0] >= 0)[0]:
            p = float(F[i, 1])
            Y[i] = -30.0
            Y[i, int(F[i, 0])] = 0.0
            Y[i, D.SILENCE] = np.log((1 - p) / p)
        return Y


def test_tcresnet_threshold_follows_the_rule_and_keeps_its_curves(tmp_path):
    """A keyword at p = 0.9 and, in the keyword stream, a confusion at p = 0.96: counting keyword-free speech
    only ("neg"), the rule keeps the keyword (threshold 0.9); counting confusions too ("all") at <= 2 FA/h
    it must rise above 0.96 and find nothing. Test sets of two SNRs come back with their DET curves."""
    pytest.importorskip("torch")
    from essm_stream.kws.baseline_stream import evaluate_tcresnet
    from essm_stream.kws.spotter import KeywordSpotter

    yes, no = D.LABELS.index("yes"), D.LABELS.index("no")
    kw_ev = [Event("yes", 5.0, 5.5)]
    _write_set(tmp_path / "val_f_kw_clean.npz", 400, [(55, 65, yes, 0.9), (250, 260, no, 0.96)], kw_ev)
    _write_set(tmp_path / "val_f_neg_clean.npz", 400, [], [])
    for c in ("clean", "5dB"):
        _write_set(tmp_path / f"test_f_kw_{c}.npz", 400, [(55, 65, yes, 0.95)], kw_ev)
        _write_set(tmp_path / f"test_f_neg_{c}.npz", 400, [(100, 110, no, 0.97)], [])
    sp = KeywordSpotter(vad_margin_db=None)
    neg = evaluate_tcresnet("f", tmp_path, None, sp, 2.0, fa_on="neg", model=_Fake())
    allr = evaluate_tcresnet("f", tmp_path, None, sp, 2.0, fa_on="all", model=_Fake())
    assert neg["fa_on"] == "neg" and neg["threshold"] <= 0.9 and neg["val_choice"]["hit_rate"] == 1.0
    assert allr["threshold"] > 0.96 and allr["val_choice"]["hit_rate"] == 0.0
    for c in ("clean", "5dB"):
        r = neg[c]
        assert (r["hits"], r["keywords"], r["fa_neg"]) == (1, 1, 1)
        assert len(r["kw_curve"]) == len(r["neg_curve"]) == len(L.THRESHOLDS)
        assert E.det_point(r["kw_curve"], r["neg_curve"], 0.0)["hits"] == 0    # the 0.97 false accept comes first
    assert "20dB" not in neg


def _cond(hits, n=1000):
    k = {"hit_rate": hits / n, "hits": hits, "keywords": n, "fa_neg": 1, "neg_hours": 0.5,
         "fa_per_hour_neg": 2.0, "fa_in_kw_stream": 3, "kw_hours": 0.77}
    curve = [{"threshold": 0.9, "hit_rate": hits / n, "hits": hits, "keywords": n, "false_accepts": 1, "hours": 0.5}]
    return {"K32": k, "K4": dict(k), "K32_kw_curve": curve, "K4_kw_curve": curve, "K32_neg_curve": curve,
            "K4_neg_curve": curve}


def test_markdown_and_plot_carry_every_model_condition_and_peer(tmp_path):
    choice = {"threshold": 0.9, "hit_rate": 0.3, "fa_per_hour": 8.0, "fa_on": "neg", "neg_fa_per_hour": 8.0,
              "kw_fa_per_hour": 24.0, "pooled_fa_per_hour": 12.0}
    names = ("clean", "20dB", "10dB", "5dB")

    def model(name, base):
        return {"name": name, "threshold": 0.9, "val_choice": choice, "val_hours": 7.9, "fa_on": "neg",
                "conditions": {c: _cond(base - 10 * i) for i, c in enumerate(names)}}

    primary = model("D", 200)
    for i, c in enumerate(names):
        primary["conditions"][c]["pocketsphinx"] = {
            "kw": {"hits": 100 - i, "keywords": 1000, "hit_rate": (100 - i) / 1000, "false_accepts": 7},
            "neg": {"false_accepts": 27, "hours": 0.5, "fa_per_hour": 54.0}}
    primary.update(pocketsphinx_threshold=1e20, pocketsphinx_rule="given", pocketsphinx_neg_s=None,
                   other_models={"H": model("H", 300)})
    tc = {"threshold": 0.99, "fa_on": "neg"}
    for c in names:
        cc = _cond(50)
        tc[c] = {**{k: cc["K32"][k] for k in ("hit_rate", "hits", "keywords", "fa_neg", "neg_hours",
                                               "fa_per_hour_neg", "fa_in_kw_stream", "kw_hours")},
                 "kw_curve": cc["K32_kw_curve"], "neg_curve": cc["K32_neg_curve"]}
    primary["tcresnet"] = tc
    res = {"fa_target": 10.0, "fa_on": "neg", "families": {"ho-x": primary}}
    md = E.markdown(res)
    assert "| | clean | 20dB | 10dB | 5dB |" in md
    assert "| ES-SSM D (threshold 0.9) K=32: keywords found | 20% (200/1000) | 19% (190/1000) |" in md
    assert "| ES-SSM H (threshold 0.9) K=32: keywords found | 30% (300/1000) |" in md
    assert "| ES-SSM H (threshold 0.9) K=4: FA/h keyword-free | 2.0 (1 in 0.50 h) |" in md
    assert "| H: K=4 / K=32 hits at the same FA/h" in md
    assert ("pocketsphinx (kws threshold 1e+20, given by --ps-threshold, chosen outside this run): found / FA/h "
            "keyword-free (all of it) | 10% (100/1000) / 54.0 (27 in 0.50 h) | 10% (99/1000)") in md
    assert "| TC-ResNet8: FA/h keyword-free (hours) | 2.0 (1 in 0.50 h) | 2.0 (1 in 0.50 h) |" in md
    assert "by the same rule): keywords found | 5% (50/1000) |" in md
    E.plot_det(res, tmp_path / "det.png")
    assert (tmp_path / "det.png").stat().st_size > 1000


def test_model_dirs_names_and_refuses_duplicates():
    assert list(E.model_dirs("a/m")) == ["ES-SSM"]
    assert E.model_dirs(["D=x/m", "y/models_h"]) == {"D": E.Path("x/m"), "models_h": E.Path("y/models_h")}
    with pytest.raises(ValueError, match="used twice"):
        E.model_dirs(["D=x", "D=y"])


def test_kws_eval_bad_models_exit_2(tmp_path, capsys):
    from essm_stream.cli import main
    rc = main(["kws-eval", "--loso", "--models", "D=a", "D=b", "--sets", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 2 and "used twice" in capsys.readouterr().out
    rc = main(["kws-eval", "--loso", "--models", str(tmp_path), "--ps-neg-s", "-1", "--sets", str(tmp_path)])
    assert rc == 2


def test_run_all_one_table_from_models_tcresnet_and_cached_pocketsphinx(tmp_path):
    """run_all end to end on tiny stored sets: two programs (the bundled one under two names), a TC-ResNet8 from its
    own folder, pocketsphinx at a given threshold read from its cache (nothing decoded), every condition present."""
    torch = pytest.importorskip("torch")
    import shutil

    from safetensors.torch import save_file

    from essm_stream.kws.baseline import _tcresnet
    from essm_stream.kws.spotter import bundled_program_path

    fam, sets = "ho-x", tmp_path / "sets"
    sets.mkdir()
    yes = D.LABELS.index("yes")
    for split, conds in (("val", ("clean",)), ("test", ("clean", "5dB"))):
        for c in conds:
            _write_set(sets / f"{split}_{fam}_kw_{c}.npz", 300, [(55, 65, yes, 0.9)], [Event("yes", 5.0, 5.5)], 25.0)
            _write_set(sets / f"{split}_{fam}_neg_{c}.npz", 300, [], [], 25.0)
    for m in ("D", "H"):
        (tmp_path / m / fam).mkdir(parents=True)
        shutil.copyfile(bundled_program_path(), tmp_path / m / fam / "kws.essm")
    tc = tmp_path / "tc" / fam
    tc.mkdir(parents=True)
    torch.manual_seed(0)
    save_file(_tcresnet(96, len(D.LABELS)).state_dict(), str(tc / "tcresnet.safetensors"))
    (tc / "tcresnet_norm.json").write_text(json.dumps({"mean": [0.0] * 96, "std": [1.0] * 96}))
    out = tmp_path / "out"
    out.mkdir()
    (out / f"extras_{fam}.json").write_text(json.dumps({"old": {}}))          # cached extras: no gate run
    for c in ("clean", "5dB"):
        for kind in ("kw", "neg"):
            s = L.load_set(sets / f"test_{fam}_{kind}_{c}.npz")
            E.ps_cache_put(out / "ps_cache", s, 1e20, None, [("yes", 5.6)] if kind == "kw" else [("no", 3.0)])
    res = E.run_all(sets, ["D=" + str(tmp_path / "D"), "H=" + str(tmp_path / "H")], out, (fam,),
                    fa_target=10.0, fa_on="neg", tcresnet_dir=tmp_path / "tc", ps={"threshold": 1e20, "neg_s": None,
                                                                                  "workers": 1})
    r = res["families"][fam]
    assert res["models"] == ["D", "H"] and list(r["conditions"]) == ["clean", "5dB"]
    assert r["other_models"]["H"]["conditions"]["5dB"]["K32"] == r["conditions"]["5dB"]["K32"]   # same program
    assert r["conditions"]["5dB"]["pocketsphinx"]["kw"]["hits"] == 1
    assert r["conditions"]["5dB"]["pocketsphinx"]["neg"]["false_accepts"] == 1
    assert r["tcresnet"]["fa_on"] == "neg" and set(r["tcresnet"]) >= {"clean", "5dB"}
    md = (out / "loso.md").read_text()
    assert "| ES-SSM H (threshold" in md and "TC-ResNet8: FA/h keyword-free" in md and "| | clean | 5dB |" in md
    assert (out / "kws_det.png").is_file() and json.loads((out / "loso.json").read_text())["models"] == ["D", "H"]
