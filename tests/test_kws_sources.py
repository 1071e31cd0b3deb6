"""Audio sources: the microphone fails clearly without a device; WAV and array sources chunk and pace;
espeak-ng synthesis (skipped where espeak-ng is not installed)."""
import sys
import types

import numpy as np
import pytest

from essm_stream.errors import ConfigError
from essm_stream.kws import data as D
from essm_stream.kws import sources as S


def _fake_sounddevice(monkeypatch, devices):
    fake = types.ModuleType("sounddevice")
    fake.query_devices = lambda: devices
    fake.InputStream = lambda **kw: (_ for _ in ()).throw(RuntimeError("no such device"))
    monkeypatch.setitem(sys.modules, "sounddevice", fake)


def test_mic_without_input_device_says_so(monkeypatch):
    _fake_sounddevice(monkeypatch, [{"name": "HDMI out", "max_input_channels": 0, "max_output_channels": 2}])
    with pytest.raises(S.MicUnavailableError, match="no audio input device"):
        S.MicSource()


def test_mic_device_that_cannot_open(monkeypatch):
    _fake_sounddevice(monkeypatch, [{"name": "usb mic", "max_input_channels": 1}])
    with pytest.raises(S.MicUnavailableError, match="cannot open the microphone"):
        S.MicSource()


def test_mic_without_sounddevice(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(S.MicUnavailableError, match="pip install sounddevice"):
        S.MicSource()


def test_mic_here_is_clear():
    # On this machine (no sound card) or any other: either it opens, or the error says why.
    try:
        src = S.MicSource()
    except S.MicUnavailableError as e:
        assert str(e)
    else:
        src.close()


def test_mic_error_is_an_oserror():
    assert issubclass(S.MicUnavailableError, OSError)


def test_wav_roundtrip_and_chunks(tmp_path):
    x = (np.sin(np.arange(16000) / 10) * 10000).astype(np.int16)
    p = tmp_path / "a.wav"
    S.write_wav(p, x)
    src = S.WavSource(p, chunk=700, realtime=False)
    chunks = list(src)
    assert np.array_equal(np.concatenate(chunks), x)
    assert [len(c) for c in chunks[:-1]] == [700] * (len(chunks) - 1)
    S.write_wav(tmp_path / "b.wav", x, sr=8000)
    with pytest.raises(ConfigError, match="16000 Hz"):
        S.WavSource(tmp_path / "b.wav")
    with pytest.raises(ConfigError, match="does not exist"):
        S.WavSource(tmp_path / "none.wav")


def test_realtime_pacing_with_fake_clock():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    src = S.ArraySource(np.zeros(1600, np.int16), chunk=320, realtime=True, clock=lambda: now[0], sleep=sleep)
    assert len(list(src)) == 5
    assert abs(now[0] - 0.1) < 1e-9             # 1600 samples = 100 ms of audio took 100 ms


def test_mulaw_roundtrip():
    x = np.linspace(-1, 1, 1001)
    y = D.mulaw_decode(D.mulaw_encode(x))
    assert np.all(np.abs(y - x) <= 0.025 * np.abs(x) + 2e-4)   # μ-law: error relative to level


def test_voice_split_is_disjoint():
    s = D.split_voices()
    assert not set(s["train"]) & set(s["test"])
    assert len(s["test"]) >= 10


@pytest.mark.skipif(D.espeak_path() is None, reason="espeak-ng not installed (scripts/kws_install_system.sh)")
def test_espeak_synthesis_is_reproducible():
    a = D.synth("left", "en-us+m3", 150, 50)
    b = D.synth("left", "en-us+m3", 150, 50)
    assert a.dtype == np.float32 and 0.2 < len(a) / 16000 < 1.5
    assert np.array_equal(a, b)
