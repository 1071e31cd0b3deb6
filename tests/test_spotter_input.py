"""KeywordSpotter input validation (#11 items 1 and 9): int16 and float PCM paths, int16 data cast to
float refused with the fix in the message, resource limits on the settings, and a property test:
whatever `process` is fed, it returns detections in range or raises the project's own error, and a
refused chunk leaves the state as it was."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from essm_stream.errors import ConfigError, ESSMError, PCMScaleError, ShapeError
from essm_stream.kws.recording import load_recording
from essm_stream.kws.spotter import MAX_SLICE_SAMPLES, KeywordSpotter, bundled_program_path

pytestmark = pytest.mark.skipif(not bundled_program_path().is_file(),
                                reason="bundled keyword program missing (essm-stream kws-train --install)")

_SP = {}


class _Cycle:
    """A controller that walks K through 1..K̄ (drives the per-hop engine.step path)."""
    def __init__(self):
        self.n = 0

    def update(self, telemetry):
        self.n += 1
        return 1 + self.n % 32


def spotter(controlled: bool = False) -> KeywordSpotter:
    """One spotter per kind for the module (hypothesis examples reuse them; each use resets it)."""
    if controlled not in _SP:
        _SP[controlled] = KeywordSpotter(record=True, controller=_Cycle() if controlled else None)
    _SP[controlled].reset()
    return _SP[controlled]


@pytest.fixture(scope="module")
def pcm16():
    pcm, _ = load_recording()
    return pcm[: 12 * 16000]     # 12 s with a few keywords


def _run(sp, x, chunk=320):
    dets = []
    for i in range(0, len(x), chunk):
        dets += sp.process(x[i:i + chunk])
    return dets, sp.trace.arrays()["posterior"].copy()


def test_int16_and_float_paths_agree(pcm16):
    """#11 item 1: int16 PCM and the same audio as float in [-1, 1] give the same detections."""
    assert pcm16.dtype == np.int16
    d16, p16 = _run(spotter(), pcm16)
    d32, p32 = _run(spotter(), pcm16.astype(np.float32) / 32768)
    assert len(d16) > 0 and d16 == d32
    np.testing.assert_allclose(p16, p32, atol=1e-4)


def test_int16_cast_to_float_is_refused_with_the_fix(pcm16):
    """#11 item 1: pcm.astype(np.float32) of int16 data silently gave different, wrong keywords."""
    sp = spotter()
    with pytest.raises(PCMScaleError, match=r"divide by 32768") as e:
        sp.process(pcm16[:3200].astype(np.float32))
    assert isinstance(e.value, ValueError)
    assert sp.hops == 0 and sp.frontend.samples == 0          # nothing consumed
    sp.process(np.full(320, 1.5, np.float32))                 # overshoot up to 2.0 is accepted
    with pytest.raises(PCMScaleError):
        sp.process(np.full(320, 2.5))


def test_refused_chunk_leaves_the_state_as_it_was(pcm16):
    a, b = pcm16[:8000], pcm16[8000:24000]
    ref_d, ref_p = _run(spotter(), np.concatenate([a, b]), chunk=8000)
    sp = spotter()
    dets = sp.process(a)
    for bad in (a.astype(np.float64), np.array([np.nan] * 10), np.zeros((10, 2), np.int16),
                np.zeros(10, np.int32), [[1, 2], [3]]):
        with pytest.raises(ESSMError):
            sp.process(bad)
    dets += sp.process(b)
    assert dets == ref_d
    np.testing.assert_array_equal(sp.trace.arrays()["posterior"], ref_p)


def test_a_long_chunk_is_sliced_and_equals_small_chunks(pcm16):
    """#11 item 9: memory does not grow with the chunk; results are chunking-invariant."""
    assert len(pcm16) > 2 * MAX_SLICE_SAMPLES
    big, p_big = _run(spotter(), pcm16, chunk=len(pcm16))
    small, p_small = _run(spotter(), pcm16, chunk=320)
    assert big == small
    np.testing.assert_allclose(p_big, p_small, atol=1e-5)


@pytest.mark.parametrize("kwargs, name", [
    (dict(smoothing_s=1e9), "smoothing_s"),          # tried to allocate TiB for the smoothing ring
    (dict(smoothing_s=float("nan")), "smoothing_s"),
    (dict(smoothing_s=float("inf")), "smoothing_s"),
    (dict(refractory_s=float("nan")), "refractory_s"),
    (dict(refractory_s=-1.0), "refractory_s"),
    (dict(rearm=float("nan")), "rearm"),
    (dict(vad_margin_db=float("inf")), "vad_margin_db"),
    (dict(vad_hang_s=-0.5), "vad_hang_s"),
    (dict(vad_hang_s="1"), "vad_hang_s"),
    (dict(idle_w=float("nan")), "idle_w"),
    (dict(dyn_w=-3.0), "dyn_w"),
    (dict(threshold=float("nan")), "threshold"),
    (dict(K=True), "K"),
    (dict(K=2.0), "K"),
    (dict(K=0), "K"),
])
def test_resource_exhausting_or_nonsense_settings_are_refused(kwargs, name):
    """#11 item 9: KeywordSpotter(smoothing_s=1e9) tried to allocate TiB; NaN settings passed the checks."""
    with pytest.raises(ConfigError, match=name):
        KeywordSpotter(**kwargs)


def test_documented_limits_are_accepted():
    sp = KeywordSpotter(smoothing_s=10.0, refractory_s=3600.0, rearm=1.0, vad_margin_db=None, vad_hang_s=0.0)
    assert sp.n_smooth == round(10.0 / sp.hop_s)


def test_controller_returning_a_bad_K_is_the_projects_error():
    class Bad:
        def update(self, telemetry):
            return 99
    sp = KeywordSpotter(controller=Bad())
    with pytest.raises(ConfigError, match=r"K must be an int in \[1, 32\]"):
        sp.process(np.zeros(16000, np.int16))      # >= 1 model step for any bundled frontend (80 ms steps after 0.78 s)


# -- property test ----------------------------------------------------------------------------

_dtypes = st.sampled_from([np.int16, np.float32, np.float64, np.int32, np.int64, np.uint8, np.float16,
                           np.complex64, np.bool_])
_shapes = st.one_of(hnp.array_shapes(min_dims=1, max_dims=1, min_side=0, max_side=3000),
                    st.tuples(st.integers(0, 500), st.integers(1, 3)),
                    st.just(()), hnp.array_shapes(min_dims=3, max_dims=3, max_side=4))
_arrays = st.one_of(
    _dtypes.flatmap(lambda dt: hnp.arrays(dt, _shapes)),
    # plausible audio: float in and around [-1, 1], sometimes at int16 scale, sometimes with NaN / Inf
    hnp.arrays(np.float32, st.integers(0, 3000),
               elements=st.floats(-40000, 40000, width=32) | st.sampled_from([np.nan, np.inf, 0.5, -1.0])),
    hnp.arrays(np.int16, st.integers(0, 3000)),
)
_other = st.one_of(st.none(), st.text(max_size=5), st.lists(st.floats(allow_nan=True), max_size=50),
                   st.lists(st.lists(st.integers(-5, 5), max_size=3), max_size=4), st.integers(), st.floats())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.one_of(_arrays, _other), min_size=1, max_size=4), controlled=st.booleans())
def test_property_process_never_raises_a_foreign_error(chunks, controlled):
    """#11 "what done looks like": whatever process() is fed, it raises an ESSMError or returns
    detections in the documented range, and a refused chunk changes nothing (fixed K and controller)."""
    sp = spotter(controlled)
    keywords = {sp.labels[j] for j in sp.keyword_ids}
    for x in chunks:
        before = (sp.hops, sp.frontend.samples)
        try:
            dets = sp.process(x)
        except ESSMError:
            assert (sp.hops, sp.frontend.samples) == before
            continue
        assert isinstance(dets, list)
        for d in dets:
            assert d.label in keywords
            assert sp.threshold <= d.score <= 1 + 1e-9
            assert 0 <= d.time_s <= sp.frontend.samples / sp.frontend.sr + 1e-9
        P = sp.trace.arrays()["posterior"]
        assert np.all(np.isfinite(P)) and np.all((P >= 0) & (P <= 1 + 1e-6))
        assert 1 <= sp.K <= sp.k_max
    sp.process(np.zeros(640, np.int16))          # still usable afterwards
