"""Tests of the product wiring in wiring_not_applied.patch (KeywordSpotter verifies each detection; bad program
entries refused). Not applied: the cascade failed its rule (V_rule.txt). To use: apply the patch and append these
to tests/test_kws_verify.py (they use its imports)."""


class _Recorder:
    """A stand-in verifier: records the windows it is asked about, rejects the labels in `reject`."""

    def __init__(self, reject=(), pre_s=1.6, post_s=0.1):
        self.reject, self.pre_s, self.post_s, self.seen = set(reject), pre_s, post_s, []

    def accept(self, window, label):
        self.seen.append((label, len(window)))
        return label not in self.reject


def _recording(seconds=14.0):
    from essm_stream.kws.recording import load_recording
    pcm, _ = load_recording()
    return pcm[: int(seconds * 16000)]


def test_spotter_verifies_each_detection_on_its_window_and_drops_the_rejected():
    from essm_stream.kws.evaluate import run_spotter
    from essm_stream.kws.spotter import KeywordSpotter, bundled_program_path
    x = _recording()
    plain = run_spotter(KeywordSpotter(bundled_program_path(), threshold=0.05, refractory_s=0.3), x)
    assert len(plain) >= 3, "the fixture must make the first stage fire"
    rec = _Recorder()
    sp = KeywordSpotter(bundled_program_path(), threshold=0.05, refractory_s=0.3, verifier=rec)
    assert run_spotter(sp, x, chunk=777) == plain                       # accept all: the same detections
    assert len(rec.seen) == len(plain) == sp.verify_calls
    assert all(n == int(round(1.7 * 16000)) for _, n in rec.seen[1:-1])  # full windows inside the stream
    drop = plain[0].label
    rec2 = _Recorder(reject={drop})
    got = run_spotter(KeywordSpotter(bundled_program_path(), threshold=0.05, refractory_s=0.3, verifier=rec2), x)
    assert got == [d for d in plain if d.label != drop]


def test_spotter_refuses_a_bad_verifier_entry_in_the_program():
    from essm_stream.kws.spotter import KeywordSpotter, load_program
    prog = load_program(None)
    fe = dict(prog.frontend)
    fe["verifier"] = {"kind": "pocketsphinx", "threshold": 3}
    prog.set_frontend(fe)
    with pytest.raises(ConfigError, match="threshold must be a finite number in"):
        KeywordSpotter(prog)
    with pytest.raises(ConfigError, match="verifier must be a config dict"):
        KeywordSpotter(load_program(None), verifier="pocketsphinx")
    assert KeywordSpotter(prog, verifier=False).verifier is None          # switched off by the caller
