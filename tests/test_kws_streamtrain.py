"""Stream training's budget draw (small-K emphasis) and its argument checks."""
import numpy as np
import pytest

pytest.importorskip("torch")

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


def test_feature_augmentation_is_identity_when_off_and_moves_stats_when_on():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 40, 96)).astype(np.float32)
    same = S.augment_features(X.copy(), np.random.default_rng(1), S.StreamTrainConfig())
    assert np.array_equal(same, X)
    sh = S.augment_features(X.copy(), np.random.default_rng(1), S.StreamTrainConfig(aug_shift=0.5))
    d = sh - X
    assert np.allclose(d, d[:, :1, :], atol=1e-6)            # one offset per crop and feature, constant in time
    assert 0.4 < d[:, 0, :].std() < 0.6
    dr = S.augment_features(X.copy(), np.random.default_rng(1), S.StreamTrainConfig(aug_drop=0.25))
    zero = np.all(dr == 0, axis=1)                           # (B, d): features dropped for the whole crop
    assert 0.2 < zero.mean() < 0.3 and np.array_equal(dr[~np.broadcast_to(zero[:, None, :], X.shape)],
                                                       X[~np.broadcast_to(zero[:, None, :], X.shape)])
    nz = S.augment_features(X.copy(), np.random.default_rng(1), S.StreamTrainConfig(aug_noise=0.6))
    assert 0.0 < (nz - X).std() < 0.6


@pytest.mark.parametrize("kw", [dict(aug_shift=-1.0), dict(aug_noise=float("nan")), dict(aug_drop=1.0),
                                dict(keep_every=-1)])
def test_bad_augmentation_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        S.StreamTrainConfig(**kw)
