"""kws.diagnose: the capacity-or-data read-out of a keyword model (stream groups, keyword-window posteriors)."""
import numpy as np
import pytest

from essm_stream.kws import data as D
from essm_stream.kws import diagnose as G
from essm_stream.kws import voices as V

N_CLS = len(D.LABELS)


def _stream(kw, T=200, voice="espeak:m1"):
    y = np.full(T, D.UNKNOWN, np.int8)
    for c, a, z in kw:
        y[a - 3:z + 1] = -1
    return {"X": np.zeros((T, 4), np.float32), "y": y, "kw": np.asarray(kw, np.int64).reshape(-1, 3), "voice": voice}


def _posteriors(s, hit: set, p_hit=0.99, fa_at=()):
    P = np.full((len(s["y"]), N_CLS), 0.01 / (N_CLS - 1))
    P[:, D.UNKNOWN] = 0.99
    for i, (c, a, z) in enumerate(s["kw"]):
        if i in hit:
            P[a + 2] = (1 - p_hit) / (N_CLS - 1)
            P[a + 2, c] = p_hit
    for t, c in fa_at:
        P[t] = 1e-4
        P[t, c] = 1 - 1e-4 * (N_CLS - 1)
    return P


def test_group_stats_counts_window_maxima_hits_and_false_accepts():
    s = _stream([[0, 20, 30], [3, 80, 90], [5, 140, 150]])
    P = _posteriors(s, hit={0, 2}, fa_at=[(110, 7)])
    g = G.group_stats([P], [s], thresholds=(0.5, 0.995))
    assert g["keywords"] == 3
    assert g["median_max_p"] == pytest.approx(0.99)           # two of three keywords peak at 0.99
    assert g["argmax_share"] == pytest.approx(2 / 3)
    hours = 200 * 0.08 / 3600
    assert g["detector"][0] == {"threshold": 0.5, "hit_rate": pytest.approx(2 / 3), "fa_per_hour": pytest.approx(1 / hours)}
    # above the keywords' 0.99 only the false accept (0.9989) fires
    assert g["detector"][1]["hit_rate"] == 0 and g["detector"][1]["fa_per_hour"] == pytest.approx(1 / hours)


def test_stream_groups_split_by_family_and_keep_test_voices_apart(tmp_path):
    fold = V.fold("festival")
    feats, test_feats = tmp_path / "f" / "embedding", tmp_path / "t" / "embedding"
    feats.mkdir(parents=True)
    test_feats.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def put(d, v, n):
        T = 50
        np.savez(d / f"{v.replace(':', '_', 1)}.npz", X=rng.normal(size=(n * T, 96)).astype(np.float16),
                 y=np.full(n * T, D.SILENCE, np.int8), kw=np.zeros((0, 3), np.int64), lens=np.full(n, T),
                 voice=np.array(v))
    tr_e = [v for v in fold["train"] if v.startswith("espeak")][:2]
    for v in tr_e:
        put(feats, v, 3)
    put(feats, "flite:awb", 2)
    put(feats, fold["val"][0], 1)
    put(test_feats, fold["test"][0], 2)
    g = G.stream_groups(tmp_path / "f", "festival", n_train=4, test_feats=tmp_path / "t")
    assert len(g["train-espeak"]) == 4                        # 6 streams sampled down to n_train
    assert {s["voice"] for s in g["train-flite"]} == {"flite:awb"} and len(g["train-flite"]) == 2
    assert len(g[f"val-{fold['val'][0].split(':')[0]}"]) == 1
    assert list(g)[-1] == f"test-{fold['test'][0]}" and len(g[f"test-{fold['test'][0]}"]) == 2
    assert not any(k.startswith("test") for k in G.stream_groups(tmp_path / "f", "festival"))


@pytest.mark.parametrize("argv, what", [
    (["streams", "{M}", "{M}"], "last.safetensors"),
    (["streams", "{M}", "{M}", "--n-train", "0"], "--n-train"),
    (["val", "{M}/none.essm"], "no program"),
])
def test_diagnose_bad_args_exit_2_with_one_line(tmp_path, capsys, argv, what):
    with pytest.raises(SystemExit) as e:
        G.main([a.replace("{M}", str(tmp_path)) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert what in err[-1] and not any("Traceback" in x for x in err)


def test_greedy_per_keyword_spends_the_false_accept_budget_where_hits_are_cheapest():
    # thresholds ascending: index 0 loosest. keyword 0 gains 5 hits for 1 FA at index 0; keyword 1
    # gains 5 hits for 4 FA; budget 2 FA in 1 h: only keyword 0 is lowered.
    H = np.array([[5, 5], [0, 0]], float)
    F = np.array([[1, 4], [0, 0]], float)
    assert list(G.greedy_per_keyword(H, F, hours=1.0, cap=2.0)) == [0, 1]
    assert list(G.greedy_per_keyword(H, F, hours=1.0, cap=5.0)) == [0, 0]
    assert list(G.greedy_per_keyword(H, F, hours=1.0, cap=0.5)) == [1, 1]   # nothing fits: strictest


def test_diagnose_perkw_missing_program_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        G.main(["perkw", str(tmp_path / "none.essm")])
    assert e.value.code == 2 and "no program" in capsys.readouterr().err


def test_engine_cost_reports_both_budgets_and_the_program_size(tmp_path):
    from essm_stream.config import ESSMConfig
    from essm_stream.engine import tiny_program

    p = tmp_path / "tiny.essm"
    prog = tiny_program(ESSMConfig(d_in=3, d_out=2, d_model=8, n_layers=1, seq_len=8, k_max=8))
    prog.save(p)
    c = G.engine_cost(p, n=20)
    assert set(c["us_per_step"]) == {4, 8} and all(v > 0 for v in c["us_per_step"].values())
    assert c["params"] == sum(np.asarray(a).size for a in prog.arrays.values()) > 0
    with pytest.raises(SystemExit) as e:
        G.main(["cost", str(p), "--n", "0"])
    assert e.value.code == 2


def test_per_keyword_hits_counts_every_keyword_at_the_stored_threshold(tmp_path):
    """perkw-test: per keyword hits <= its count, counts summing to the stream's keywords, the program's
    stored threshold used, and the same totals as the global sweep at that threshold."""
    from essm_stream.kws import loso as L
    from essm_stream.kws.spotter import KeywordSpotter, bundled_program_path
    from essm_stream.program import StreamProgram

    rng = np.random.default_rng(3)
    T = 400
    times = 0.775 + 0.08 * np.arange(T)
    events = [(D.KEYWORDS[i % 10], 1.0 + 3 * i, 1.5 + 3 * i) for i in range(9)]
    pcm = np.zeros(int(times[-1] * 16000) + 1, np.int16)
    L.save_set(tmp_path / "test_festival_kw_clean.npz", pcm, events, {"snr_db": None}, with_features=False)
    L.save_set(tmp_path / "test_festival_neg_clean.npz", pcm, [], {"snr_db": None}, with_features=False)
    prog = bundled_program_path()
    fe = StreamProgram.load(prog).frontend
    for name in ("kw", "neg"):                       # wide random embeddings: keywords fire here and there
        z = dict(np.load(tmp_path / f"test_festival_{name}_clean.npz"))
        z.update(F=(np.asarray(fe["mean"]) + np.asarray(fe["std"]) * 2 * rng.normal(size=(T, 96))).astype(np.float16), levels=np.where(np.arange(T) % 40 < 20, -60.0, -15.0), times=times)
        np.savez(tmp_path / f"test_festival_{name}_clean.npz", **z)
    res = G.per_keyword_hits(prog, tmp_path, "festival", conditions=("clean",), threshold=0.3)
    r = res["clean"]
    assert r["threshold"] == 0.3 and r["K"] == StreamProgram.load(prog).k_max
    kws = [k for k in r if k not in ("threshold", "K", "hours")]
    assert sorted(kws) == sorted(D.KEYWORDS)
    assert sum(r[k]["keywords"] for k in kws) == 9 and all(r[k]["hits"] <= r[k]["keywords"] for k in kws)
    kw, neg = L.load_condition(tmp_path, "test", "festival", "clean")
    sp = KeywordSpotter(StreamProgram.load(prog))
    p = StreamProgram.load(prog)
    Y = L.engine_outputs(p, L.normalise(p, neg[0]["F"]), p.k_max)
    row = L.sweep_thresholds(sp, Y, neg[0]["levels"], neg[0]["times"], [], len(pcm) / 16000, (0.3,))[0]
    assert sum(r[k]["fa_neg"] for k in kws) == row["false_accepts"] > 0     # random speech fires at 0.3
    assert G.per_keyword_hits(prog, tmp_path, "festival", ("clean",))["clean"]["threshold"] == sp.threshold


def _random_condition(tmp_path, T=400, seed=5):
    """test_festival_{kw,neg}_clean.npz with wide random embeddings around the bundled program's mean (its
    keywords fire here and there), 9 labelled keywords; returns the bundled program's path."""
    from essm_stream.kws import loso as L
    from essm_stream.kws.spotter import bundled_program_path
    from essm_stream.program import StreamProgram

    rng = np.random.default_rng(seed)
    times = 0.775 + 0.08 * np.arange(T)
    events = [(D.KEYWORDS[i % 10], 1.0 + 3 * i, 1.5 + 3 * i) for i in range(9)]
    pcm = np.zeros(int(times[-1] * 16000) + 1, np.int16)
    prog = bundled_program_path()
    fe = StreamProgram.load(prog).frontend
    for name, ev in (("kw", events), ("neg", [])):
        L.save_set(tmp_path / f"test_festival_{name}_clean.npz", pcm, ev, {"snr_db": None}, with_features=False)
        z = dict(np.load(tmp_path / f"test_festival_{name}_clean.npz"))
        z.update(F=(np.asarray(fe["mean"]) + np.asarray(fe["std"]) * 2 * rng.normal(size=(T, 96))).astype(np.float16),
                 levels=np.where(np.arange(T) % 40 < 20, -60.0, -15.0), times=times)
        np.savez(tmp_path / f"test_festival_{name}_clean.npz", **z)
    return prog


def test_budget_det_reads_every_budget_at_matched_false_accept_rates(tmp_path):
    """det-k: K̄ first as the reference, each K's read-out equal to det_point over its own engine sweep,
    the ratio = hits(K) / hits(K̄), and bad budgets / missing sets refused with a clear error."""
    from essm_stream.kws import loso as L
    from essm_stream.kws.loso_eval import det_point, essm_rows
    from essm_stream.kws.spotter import KeywordSpotter
    from essm_stream.program import StreamProgram

    prog = _random_condition(tmp_path)
    p = StreamProgram.load(prog)
    ths = (0.3, 0.5, 0.7, 0.9)
    caps = (1e3, 1e5)
    res = G.budget_det(prog, tmp_path, "festival", Ks=(4, 8), caps=caps, conditions=("clean",), thresholds=ths)
    r = res["clean"]
    assert list(r["det"]) == [p.k_max, 4, 8] and r["keywords"] == 9
    kw, neg = L.load_condition(tmp_path, "test", "festival", "clean")
    sp = KeywordSpotter(p)
    for K in (p.k_max, 4):
        rk, rn = essm_rows(p, sp, kw, K, ths), essm_rows(p, sp, neg, K, ths)
        for cap in caps:
            assert r["det"][K][cap] == det_point(rk, rn, cap)
        assert [c["hits"] for c in r["curves"][K]] == [a["hits"] for a in rk]
    top = r["det"][p.k_max][1e5]
    assert top["hits"] == max(c["hits"] for c in r["curves"][p.k_max]) > 0     # random speech: keywords fire
    for K in (4, 8):
        assert r["ratio"][K][1e5] == pytest.approx(r["det"][K][1e5]["hits"] / top["hits"])
    assert r["ratio"][p.k_max][1e5] == 1.0
    md = G.budget_det_markdown("m", res)
    assert f"K = 4 / K = {p.k_max}" in md and "9 keywords" in md
    rb = G.budget_det(prog, tmp_path, "festival", Ks=(4,), caps=(1e5,), conditions=("clean",), thresholds=ths,
                      n_boot=50)["clean"]                 # the flags' sums are checked against the sweep inside
    lo, hi = rb["boot"][4][1e5]
    assert lo <= rb["ratio"][4][1e5] <= hi and rb["boot"][p.k_max][1e5] == (1.0, 1.0)
    assert "[" in G.budget_det_markdown("m", {"clean": rb})
    with pytest.raises(ValueError, match="outside 1"):
        G.budget_det(prog, tmp_path, "festival", Ks=(p.k_max + 1,), conditions=("clean",))
    with pytest.raises(FileNotFoundError, match="test_festival_kw_10dB"):
        G.budget_det(prog, tmp_path, "festival", Ks=(4,), conditions=("10dB",), thresholds=ths)


def test_det_k_cli_writes_the_table_and_json_and_refuses_bad_args(tmp_path, capsys):
    import json

    prog = _random_condition(tmp_path, T=200)
    out = tmp_path / "o" / "det.json"
    assert G.main(["det-k", str(prog), "--sets", str(tmp_path), "--K", "4", "--caps", "10000",
                   "--conditions", "clean", "--json", str(out), "--name", "D", "--plot", str(tmp_path / "d.png")]) == 0
    o = capsys.readouterr().out
    assert "K = 4 / K = 32" in o and o.startswith("D, clean: 9 keywords")
    j = json.loads(out.read_text())
    assert j["test_family"] == "festival" and list(j["results"]["D"]["clean"]["det"]) == ["32", "4"]
    assert j["programs"] == {"D": str(prog)} and (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    for argv, what in ((["--K", "0"], "--K"), (["--caps", "x"], "--caps"), (["--K", "64"], "outside 1"),
                       (["--conditions", "5dB"], "test_festival_kw_5dB"), (["--name", "a", "--name", "b"], "--name")):
        with pytest.raises(SystemExit) as e:
            G.main(["det-k", str(prog), "--sets", str(tmp_path)] + argv)
        assert e.value.code == 2 and what in capsys.readouterr().err.strip().splitlines()[-1]


def test_keyword_hit_flags_match_score_stream_and_the_bootstrap_is_paired():
    from essm_stream.kws.data import Event
    from essm_stream.kws.evaluate import score_stream
    from essm_stream.kws.spotter import Detection

    rng = np.random.default_rng(7)
    events = [Event(D.KEYWORDS[i % 3], 2.0 * i, 2.0 * i + 0.4) for i in range(60)]   # windows overlap (1.5 s tolerance)
    for trial in range(5):
        dets = [Detection(D.KEYWORDS[int(rng.integers(3))], 0.9, float(t)) for t in rng.uniform(0, 121, 80)]
        f = G.keyword_hit_flags(dets, events)
        assert f.shape == (60,) and int(f.sum()) == score_stream(dets, events, 121.0)[0].hits
    ref = np.zeros(200, bool)
    ref[:100] = True
    more = ref.copy()
    more[100:110] = True                                   # K finds everything ref finds, plus 10
    b = G.bootstrap_ratios({32: ref, 4: more, 8: ref[::-1]}, 32, n_boot=300)
    assert b[32] == (1.0, 1.0) and 1.0 <= b[4][0] <= 1.1 <= b[4][1] < 1.3
    assert b[8][0] < 1.0 < b[8][1]                           # unpaired flags: a wide interval around 1
    assert G.bootstrap_ratios({32: np.zeros(0, bool)}, 32) == {32: None}
