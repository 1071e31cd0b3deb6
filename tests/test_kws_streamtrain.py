"""Stream training's budget draw (small-K emphasis) and its argument checks."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from essm_stream.config import ESSMConfig  # noqa: E402
from essm_stream.errors import ConfigError  # noqa: E402
from essm_stream.kws import streamtrain as S  # noqa: E402
from essm_stream.train import TrainConfig, sample_budget  # noqa: E402

CFG = ESSMConfig(d_in=4, d_out=12, d_model=8, n_layers=1, seq_len=32, k_max=32, head="step")
TC = TrainConfig(task="kws-stream")


def _draws(sc, n=4000):
    return np.array([S.draw_budget(np.random.default_rng((7, i)), sc, TC, CFG, 16) for i in range(n)])


def test_without_small_k_share_the_draw_is_plain_budget_dropout():
    sc = S.StreamTrainConfig(small_k_frac=0.0)
    want = [sample_budget(np.random.default_rng((7, i)), TC, CFG, 16) for i in range(300)]
    assert list(_draws(sc, 300)) == want


def test_small_k_share_moves_budget_mass_to_small_k():
    plain = _draws(S.StreamTrainConfig(small_k_frac=0.0))
    heavy = _draws(S.StreamTrainConfig(small_k_frac=0.5, small_k_max=8))
    assert plain.min() >= 1 and plain.max() <= 32 and heavy.min() >= 1 and heavy.max() <= 32
    # P(K <= 8) is 8/32 = 0.25 uniform, 0.5 + 0.5 * 0.25 = 0.625 with half the draws on 1..8
    assert abs((plain <= 8).mean() - 0.25) < 0.03
    assert abs((heavy <= 8).mean() - 0.625) < 0.03
    only = _draws(S.StreamTrainConfig(small_k_frac=1.0, small_k_max=4), 500)
    assert set(only.tolist()) == {1, 2, 3, 4}


@pytest.mark.parametrize("kw", [dict(small_k_frac=1.5), dict(small_k_frac=-0.1), dict(small_k_max=0),
                                dict(small_k_frac=0.2, small_k_max=33)])
def test_bad_small_k_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        S.StreamTrainConfig(**kw)


def test_cli_bad_small_k_frac_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        S.main([str(tmp_path), str(tmp_path / "out"), "--small-k-frac", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "small_k_frac" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists()


def _aug(X, seed=1, **kw):
    import torch
    gen = torch.Generator().manual_seed(seed)
    return S.augment_features(torch.from_numpy(X.copy()), gen, S.StreamTrainConfig(**kw)).numpy()


def test_feature_augmentation_is_identity_when_off_and_moves_stats_when_on():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 40, 96)).astype(np.float32)
    assert np.array_equal(_aug(X), X)
    d = _aug(X, aug_shift=0.5) - X
    assert np.allclose(d, d[:, :1, :], atol=1e-6)            # one offset per crop and feature, constant in time
    assert 0.4 < d[:, 0, :].std() < 0.6
    g = _aug(X, aug_scale=0.2) / X
    assert np.allclose(g, g[:, :1, :], rtol=1e-5) and 0.15 < g[:, 0, :].std() < 0.25   # one gain per crop, feature
    dr = _aug(X, aug_drop=0.25)
    zero = np.all(dr == 0, axis=1)                           # (B, d): features dropped for the whole crop
    assert 0.2 < zero.mean() < 0.3 and np.array_equal(dr[~np.broadcast_to(zero[:, None, :], X.shape)],
                                                       X[~np.broadcast_to(zero[:, None, :], X.shape)])
    nz = _aug(X, aug_noise=0.6) - X
    per_crop = nz.reshape(64, -1).std(1)                     # noise std drawn per crop, uniform on (0, 0.6)
    assert 0.0 < per_crop.min() and per_crop.max() < 0.6 and per_crop.std() > 0.1
    assert np.array_equal(_aug(X, seed=3, aug_noise=0.6), _aug(X, seed=3, aug_noise=0.6))   # seeded


def _stream_table(rng, lens, kws_per_stream=3):
    streams = []
    for L in lens:
        a = np.sort(rng.choice(np.arange(2, L - 8), kws_per_stream, replace=False))
        kw = np.stack([rng.integers(0, 10, kws_per_stream), a, a + rng.integers(0, 6, kws_per_stream)], 1)
        streams.append({"y": np.zeros(L, np.int8), "kw": kw})
    return streams


def test_draw_crops_finds_exactly_the_keywords_inside_each_crop():
    """The vectorised crop draw against a plain loop over the crops: indices, mask and keyword rows."""
    rng = np.random.default_rng(4)
    tr = _stream_table(rng, [40, 90, 17, 64, 120])
    off, G, lens = S._keyword_table(tr)
    anchors = [(1, 30), (2, 5), (4, 119)]
    for seed in range(20):
        idx, valid, kk = S.draw_crops(np.random.default_rng(seed), 24, 32, off, lens, lens / lens.sum(), anchors, G)
        want = []
        for b in range(24):
            n = int(valid[b].sum())
            assert n >= 1 and valid[b, :n].all() and not valid[b, n:].any()
            si = int(np.searchsorted(off, idx[b, 0], side="right") - 1)
            s0 = int(idx[b, 0] - off[si])
            assert np.array_equal(idx[b, :n], off[si] + s0 + np.arange(n)) and s0 + n <= lens[si]
            for c, a, z in tr[si]["kw"]:
                if a >= s0 and z < s0 + n:
                    want.append((b, int(c), int(a - s0), int(z - s0)))
        assert sorted(map(tuple, kk.tolist())) == sorted(want)


def test_draw_crops_ends_a_third_of_crops_just_after_an_anchor():
    rng = np.random.default_rng(1)
    tr = _stream_table(rng, [300, 300])
    off, G, lens = S._keyword_table(tr)
    idx, valid, _ = S.draw_crops(np.random.default_rng(2), 3000, 16, off, lens, lens / lens.sum(), [(1, 100)], G)
    end = idx[np.arange(3000), valid.sum(1) - 1]
    near = (end >= off[1] + 100) & (end < off[1] + 120)
    assert 0.28 < near.mean() < 0.40                          # 1/3 anchored, plus a few random crops ending there


def test_packed_int8_features_load_like_float16(tmp_path):
    from essm_stream.kws import featpack
    rng = np.random.default_rng(0)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    X = (rng.standard_normal((300, 96)) * 3 + 5).astype(np.float16)
    np.savez(src / "flite_kal.npz", X=X, y=np.zeros(300, np.int8), kw=np.array([[1, 10, 15], [2, 200, 210]]),
             lens=np.array([100, 200]), voice=np.array("flite:kal"))
    mean, std = np.full(96, 5.0), np.full(96, 3.0)
    featpack.pack(src, dst, mean, std, step=1 / 12)
    a, b = S.load_streams(src, ["flite:kal"]), S.load_streams(dst, ["flite:kal"])
    assert len(a) == len(b) == 2
    for u, v in zip(a, b):
        err = np.abs(u["X"].astype(np.float32) - v["X"].astype(np.float32))
        assert err.max() <= 3.0 / 24 * 1.01 + 0.01           # half a step of the normalised scale, plus float16
        assert np.array_equal(u["kw"], v["kw"]) and np.array_equal(u["y"], v["y"])
    featpack.pack(src, tmp_path / "half", mean, std, step=1 / 12, keep={"flite": 0.5})
    assert len(S.load_streams(tmp_path / "half", ["flite:kal"])) == 1


@pytest.mark.parametrize("kw", [dict(aug_shift=-1.0), dict(aug_noise=float("nan")), dict(aug_drop=1.0),
                                dict(keep_every=-1)])
def test_bad_augmentation_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        S.StreamTrainConfig(**kw)


def test_non_finite_steps_are_skipped_and_persistent_ones_stop_training(tmp_path, monkeypatch):
    """A NaN in the minibatch must never reach the weights: the update is skipped, and after
    train.MAX_NONFINITE_STEPS such steps in a row training stops with an error; checkpoints stay loadable."""
    from essm_stream.checkpoint import load_checkpoint
    from essm_stream.errors import NonFiniteInputError
    from essm_stream.kws import data as D
    from essm_stream.kws import voices as V

    from kws_sets import write_training_streams

    fold = V.fold("festival")
    feats = tmp_path / "feats" / "embedding"
    write_training_streams(feats, (fold["train"][0], fold["val"][0]), kw=[(0, 50, 55)])
    small = dict(test_family="festival", d_model=8, d_gate=8, k_max=4, seq_len=8, crop=16, batch_size=4,
                 warmup_steps=2, eval_every=1000, mine_every=1000, ckpt_every=3)
    out = tmp_path / "m"
    S.train_fold(tmp_path / "feats", out, S.StreamTrainConfig(steps=3, **small))
    good = {k: v.clone() for k, v in load_checkpoint(out / "last.safetensors")[0].state_dict().items()}
    f = feats / f"{fold['train'][0].replace(':', '_', 1)}.npz"
    z = dict(np.load(f))
    z["X"][:] = np.nan                                       # every training crop is now NaN
    np.savez(f, **z)
    import essm_stream.train as T
    monkeypatch.setattr(T, "MAX_NONFINITE_STEPS", 4)
    with pytest.raises(NonFiniteInputError, match="4 steps in a row"):
        S.train_fold(tmp_path / "feats", out, S.StreamTrainConfig(steps=20, **small))
    model, meta = load_checkpoint(out / "last.safetensors")  # step 6's checkpoint: finite, unchanged weights
    assert meta["train"]["step"] == 6
    for k, v in model.state_dict().items():
        assert torch.equal(v, good[k]), k


@pytest.mark.parametrize("args, says", [(["--keep", "espeak=2"], "FAMILY=FRAC"), (["--keep", "espeak"], "FAMILY=FRAC"),
                                         (["--step", "0"], "step"), ([], "No such file")])
def test_featpack_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, says):
    from essm_stream.kws import featpack
    (tmp_path / "src").mkdir()
    np.savez(tmp_path / "src" / "flite_kal.npz", X=np.zeros((10, 96), np.float16), y=np.zeros(10, np.int8),
             kw=np.zeros((0, 3), int), lens=np.array([10]), voice=np.array("flite:kal"))
    norm = tmp_path / "norm.json"
    if args:
        norm.write_text('{"mean": %s, "std": %s}' % ([0.0] * 96, [1.0] * 96))
    with pytest.raises(SystemExit) as e:
        featpack.main([str(tmp_path / "src"), str(tmp_path / "dst"), "--norm", str(norm), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and says in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "dst").exists()
