"""Speech-embedding frontend (kws/embed.py): streamed == whole clip for any chunking, equal to
openwakeword's own feature code on non-quiet audio, model files checked by hash; a program that
carries it runs in KeywordSpotter, and loso.replay() reproduces KeywordSpotter.process exactly."""
import numpy as np
import pytest

pytest.importorskip("openwakeword")
pytest.importorskip("onnxruntime")

from essm_stream.errors import ConfigError  # noqa: E402
from essm_stream.kws.embed import DIM, SpeechEmbedding, embedding_params  # noqa: E402
from essm_stream.kws.frontend import make_frontend  # noqa: E402


@pytest.fixture(scope="module")
def params():
    return embedding_params()


def _signal(seconds=3.0, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    x = 0.2 * np.sin(2 * np.pi * (150 + 100 * np.sin(2 * np.pi * 0.7 * t)) * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    x[: 4000] = 0.0                                   # digital silence at the start
    return (x + 0.003 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("chunk", [1, 159, 1280, 1281, 5000])
def test_streamed_equals_whole_clip(params, chunk):
    x = _signal()
    fe = SpeechEmbedding(params, normalize=False)
    whole = fe.features(x)
    fe.reset()
    got = np.concatenate([fe.process(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    assert got.shape == whole.shape == ((len(x) - fe.win) // fe.hop + 1, DIM)
    np.testing.assert_array_equal(got, whole)
    assert fe.frames == len(got)


def test_step_timing(params):
    fe = SpeechEmbedding(params, normalize=False)
    assert fe.hop == 1280 and fe.win == 160 * 75 + 512
    assert fe.frame_end_time(0) == pytest.approx(fe.win / 16000)
    x = _signal(1.0)
    assert len(fe.process(x[: fe.win - 1])) == 0
    assert len(fe.process(x[fe.win - 1: fe.win])) == 1      # the step comes with its last sample


def test_matches_openwakeword_features(params):
    from openwakeword.utils import AudioFeatures

    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal(3 * 16000)).astype(np.float32)      # no quiet mel bins
    ref = AudioFeatures(inference_framework="onnx")._get_embeddings(np.round(x * 32767).astype(np.int16))
    got = SpeechEmbedding(params, normalize=False).features(np.round(x * 32767).astype(np.int16))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-3 * np.abs(ref).max())


def test_wrong_model_hash_and_bad_params(params):
    bad = dict(params, embedding_sha256="0" * 64)
    with pytest.raises(ConfigError, match="differs"):
        SpeechEmbedding(bad)
    with pytest.raises(ConfigError, match="speech_embedding"):
        SpeechEmbedding({"type": "logmel"})
    with pytest.raises(ConfigError, match="unknown frontend"):
        make_frontend({"type": "mfcc"})


def test_gate_skips_the_network_on_silence(params):
    x = np.concatenate([np.zeros(5 * 16000, np.float32), _signal(2.0)[4000:]])
    fe = SpeechEmbedding(params, normalize=False, gate_margin_db=6.0, gate_hang_s=0.5)
    E = fe.process(x)
    assert fe.embeddings_run < len(E)                  # silence: the last quiet embedding repeated
    ungated = SpeechEmbedding(params, normalize=False).features(x)
    loud = np.nonzero(fe.last_levels_db > fe.last_levels_db.min() + 10)[0]
    np.testing.assert_array_equal(E[loud], ungated[loud])   # sound: computed as without the gate


@pytest.mark.slow
@pytest.mark.torch
def test_program_with_embedding_frontend_runs_and_replay_matches(params):
    pytest.importorskip("torch")
    from essm_stream.compile import compile_model
    from essm_stream.config import ESSMConfig
    from essm_stream.kws import data as D
    from essm_stream.kws import loso as L
    from essm_stream.kws.evaluate import run_spotter
    from essm_stream.kws.spotter import KeywordSpotter
    from essm_stream.model import ESSMModel

    import torch
    torch.manual_seed(0)
    model = ESSMModel(ESSMConfig(d_in=DIM, d_out=len(D.LABELS), d_model=8, n_layers=1, seq_len=8, k_max=8,
                                 d_gate=8, head="step")).eval()
    fe = embedding_params(mean=np.zeros(DIM), std=np.full(DIM, 20.0), stack=1)
    fe["labels"] = list(D.LABELS)
    fe["detector"] = {"threshold": 0.09, "smoothing_s": 0.0, "refractory_s": 0.3}
    prog = compile_model(model, frontend=fe)
    x = np.round(_signal(6.0) * 32767).astype(np.int16)
    sp = KeywordSpotter(prog, K=8, vad_margin_db=3.0)
    ref = run_spotter(sp, x, chunk=777)
    assert sp.hops == (len(x) - 12512) // 1280 + 1
    F, lv, t = L.stream_features(x)
    Y = L.engine_outputs(prog, L.normalise(prog, F), 8)
    sp2 = KeywordSpotter(prog, K=8, vad_margin_db=3.0)
    got = L.replay(sp2, Y, lv, t)
    assert [(d.label, d.time_s) for d in got] == [(d.label, d.time_s) for d in ref]
    assert len(ref) > 0
    for th in (0.09, 0.12, 0.2):                      # the vectorised replay used for threshold sweeps
        slow = L.replay(sp2, Y, lv, t, th)
        fast = L.fast_replay(sp2, Y, lv, t, th)
        assert [(d.label, d.time_s) for d in fast] == [(d.label, d.time_s) for d in slow]
    sp2.threshold = 0.09
