"""Keyword spotter on the bundled program: finds keywords in a generated stream, stays quiet on noise,
any chunking gives the same detections, runs without torch; sources fail clearly."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from essm_stream.errors import ConfigError
from essm_stream.kws import data as D
from essm_stream.kws.evaluate import run_spotter, score_stream
from essm_stream.kws.recording import load_recording
from essm_stream.kws.spotter import Detection, KeywordSpotter, bundled_program_path

pytestmark = pytest.mark.skipif(not bundled_program_path().is_file(),
                                reason="bundled keyword program missing (essm-stream kws-train --install)")


@pytest.fixture(scope="module")
def recording():
    return load_recording()


@pytest.fixture(scope="module")
def spotter():
    return KeywordSpotter()


def test_finds_keywords_in_generated_stream(spotter, recording):
    pcm, events = recording
    dets = run_spotter(spotter, pcm)
    s, verdicts = score_stream(dets, events, len(pcm) / 16000)
    print(f"bundled stream: {s.hits}/{s.keywords} hits, {s.false_accepts} false accepts, "
          f"median latency {s.latency_median_s}")
    assert all(isinstance(d, Detection) and d.label in D.KEYWORDS for d in dets)
    # Regression guard for the bundled model at its stored threshold (docs/KWS.md has the numbers;
    # the stream target of the issue is not met yet): some keywords found, few false accepts.
    assert s.hits >= 3
    assert s.false_accepts <= 3


def test_quiet_on_noise(spotter):
    # Steady noise of four colours at three levels, 10 s each from a fresh stream. Only detections
    # after the first 3 s count: the bundled model sometimes fires once on the start-up transient
    # (zero history, then noise; more than its 2 x 1.28 s receptive field was never seen in
    # training) and on loud (-14 dBFS RMS) noise: docs/KWS.md, "what is short".
    # Bound: at most 2 false accepts in the 84 s of steady noise (≈ 85 per hour; the bundled model
    # gets 0-2 depending on the noise draw), none on digital silence.
    rng = np.random.default_rng(5)
    late = []
    for alpha in (0.0, -1.0, -2.0, 1.0):
        for g in (0.003, 0.01, 0.05):
            x = (g * D.colored_noise(10 * 16000, alpha, rng)).astype(np.float32)
            late += [(alpha, g, d) for d in run_spotter(spotter, x) if d.time_s > 3.0]
    print(f"false accepts on 84 s of steady noise: {len(late)} {late}")
    assert len(late) <= 2, late
    assert run_spotter(spotter, np.zeros(5 * 16000, np.int16)) == []


def test_chunking_does_not_change_detections(spotter, recording):
    pcm = recording[0][: 12 * 16000]
    ref = run_spotter(spotter, pcm, chunk=16000)
    for chunk in (160, 333, 4097):
        got = run_spotter(spotter, pcm, chunk=chunk)
        assert [(d.label, d.time_s) for d in got] == [(d.label, d.time_s) for d in ref]
        assert np.allclose([d.score for d in got], [d.score for d in ref], atol=1e-5)


def test_controller_drives_K(recording):
    class Alternate:
        def __init__(self):
            self.n = 0

        def update(self, telemetry):
            self.n += 1
            return 1 if self.n % 2 else 32

    sp = KeywordSpotter(controller=Alternate(), telemetry=lambda s, info: None, record=True)
    sp.process(recording[0][:4 * 16000])         # >= 40 steps at the bundled 80 ms step
    Ks = sp.trace.arrays()["K"]
    assert set(Ks.tolist()) == {1, 32} and abs(sp.mean_K - 16.5) < 0.6


def test_bad_arguments():
    with pytest.raises(ConfigError, match="K must be"):
        KeywordSpotter(K=33)
    with pytest.raises(ConfigError, match="threshold"):
        KeywordSpotter(threshold=1.5)
    with pytest.raises(ConfigError, match="update"):
        KeywordSpotter(controller=object())
    with pytest.raises(TypeError):
        KeywordSpotter(treshold=0.5)


def test_bundled_program_is_small_and_runs_without_torch():
    assert bundled_program_path().stat().st_size < 4_000_000
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None          # any import of torch now fails
        import numpy as np
        from essm_stream.kws import Detection, KeywordSpotter   # the public path (DESIGN.md)
        from essm_stream.kws import spotter
        from essm_stream.kws.recording import load_recording
        assert KeywordSpotter is spotter.KeywordSpotter and Detection is spotter.Detection
        sp = KeywordSpotter()
        pcm, ev = load_recording()
        dets = sp.process(pcm[: 3 * 16000])
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        assert "librosa" not in sys.modules
        assert all(isinstance(d, Detection) for d in dets)
        print("ok", sp.hops, len(dets))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_energy_controller_saves_energy(recording):
    pytest.importorskip("controllers.control")
    from essm_stream.kws.control import kws_energy_controller

    sp = KeywordSpotter(record=True, controller=None)
    ctl = kws_energy_controller(sp.program, fraction=0.5)
    sp = KeywordSpotter(sp.program, controller=ctl, record=True)
    pcm, events = recording
    dets = run_spotter(sp, pcm[: 20 * 16000])
    Ks = sp.trace.arrays()["K"]
    assert Ks.min() >= 1 and Ks.max() <= 32
    assert sp.mean_K < 20                      # quiet stretches run at K = 1
    assert any(k > 1 for k in Ks)              # speech gets more
    assert isinstance(dets, list)


def test_kws_package_names_resolve_lazily():
    code = textwrap.dedent("""
        import sys
        import essm_stream.kws as kws
        from essm_stream.kws import data
        assert "essm_stream.kws.spotter" not in sys.modules, "importing the package loaded the spotter"
        try:
            kws.NoSuchName
        except AttributeError as e:
            assert "NoSuchName" in str(e)
        else:
            raise SystemExit("no AttributeError")
        print("ok", sorted(kws.__all__))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok ['Detection', 'KeywordSpotter']"
