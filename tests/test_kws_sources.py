"""Audio sources: the microphone (through a fake PortAudio: native rate and channels resampled and mixed
to the program's rate, the ring's overflows, start-up and stall timeouts, clear errors without a
device; through the real PortAudio on a plain ALSA file device); the streaming resampler against scipy's resample_poly; WAV and array sources chunk and
pace; espeak-ng synthesis (skipped where espeak-ng is not installed). The real audio server is in
test_kws_mic_pulse.py."""
import sys
import threading
import types

import numpy as np
import pytest
from scipy.signal import resample_poly

from essm_stream.errors import ConfigError
from essm_stream.kws import data as D
from essm_stream.kws import sources as S

class _Status:
    def __init__(self, overflow=False):
        self.input_overflow = overflow

    def __bool__(self):
        return self.input_overflow


def _fake_sounddevice(monkeypatch, devices, *, signal=None, block=None, stop_after=None, default=None):
    """A stand-in `sounddevice`: `devices` as query_devices lists them; an InputStream that, once
    started, calls the callback from its own thread with `signal` ((n, channels) float32 at the
    device rate) in blocks of the sizes `block` yields (None: refuse to open), then stays silent
    (`stop_after` blocks at most)."""
    fake = types.ModuleType("sounddevice")
    default_in = default if default is not None else next(
        (i for i, d in enumerate(devices) if d.get("max_input_channels", 0) > 0), -1)

    def query_devices(device=None, kind=None):
        if kind is None and device is None:
            return devices
        if device is None:
            if default_in < 0:
                raise RuntimeError("Error querying device -1")
            return devices[default_in]
        if isinstance(device, int):
            if not 0 <= device < len(devices):
                raise ValueError(f"Device {device} not found")
            return devices[device]
        hits = [d for d in devices if device.lower() in d["name"].lower() and d.get("max_input_channels", 0)]
        if len(hits) != 1:
            raise ValueError(f"No input device matching {device!r}" if not hits else f"Multiple devices match {device!r}")
        return hits[0]

    class InputStream:
        def __init__(self, *, samplerate, channels, dtype, blocksize, latency, device, callback):
            if signal is None:
                raise RuntimeError("no such device")
            assert signal.shape[1] >= channels and dtype == "float32"
            self.kw = dict(samplerate=samplerate, channels=channels, blocksize=blocksize, latency=latency)
            self.latency = 0.05
            self.cb, self.channels = callback, channels
            self.done = threading.Event()
            fake.streams.append(self)

        def _run(self):
            pos, k = 0, 0
            for n in block:
                if pos >= len(signal) or (stop_after is not None and k >= stop_after) or self.stopped:
                    break
                x = np.ascontiguousarray(signal[pos:pos + n, :self.channels], dtype=np.float32)
                self.cb(x, len(x), None, _Status(False))
                pos, k = pos + len(x), k + 1
            self.done.set()

        def start(self):
            self.stopped = False
            self.t = threading.Thread(target=self._run, daemon=True)
            self.t.start()

        def stop(self):
            self.stopped = True
            self.t.join()

        def close(self):
            pass

    fake.streams = []
    fake.query_devices = query_devices
    fake.query_hostapis = lambda: [{"name": "ALSA"}]
    fake.default = types.SimpleNamespace(device=[default_in, -1])
    fake.InputStream = InputStream
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    return fake


USB = {"name": "usb mic", "max_input_channels": 2, "default_samplerate": 44100.0, "hostapi": 0}


def _blocks(seed=0, lo=1, hi=2000):
    rng = np.random.default_rng(seed)
    while True:
        yield int(rng.integers(lo, hi))


def _stereo(n, seed=0):
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((n, 2))).astype(np.float32)


def test_mic_without_input_device_says_so(monkeypatch):
    _fake_sounddevice(monkeypatch, [{"name": "HDMI out", "max_input_channels": 0, "max_output_channels": 2}])
    with pytest.raises(S.MicUnavailableError, match="no audio input device"):
        S.MicSource()


def test_mic_device_that_cannot_open(monkeypatch):
    _fake_sounddevice(monkeypatch, [{"name": "usb mic", "max_input_channels": 1}])
    with pytest.raises(S.MicUnavailableError, match="cannot open the microphone 'usb mic'"):
        S.MicSource()


def test_mic_unknown_device_names_the_fix(monkeypatch):
    _fake_sounddevice(monkeypatch, [USB], signal=_stereo(10))
    with pytest.raises(S.MicUnavailableError, match="--list-devices"):
        S.MicSource(device="webcam")
    with pytest.raises(S.MicUnavailableError, match="--list-devices"):
        S.MicSource(device="7")                       # an index given as a string, as the CLI passes it


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


def test_mic_errors_are_oserrors():
    assert issubclass(S.MicUnavailableError, OSError)
    assert issubclass(S.MicStallError, S.MicUnavailableError) and issubclass(S.MicStallError, TimeoutError)


@pytest.mark.parametrize("bad", [dict(chunk=0), dict(rate=0), dict(blocksize=-1), dict(latency="medium"),
                                 dict(latency=-0.1), dict(channel="left"), dict(channel=2), dict(channels=3),
                                 dict(buffer_s=0), dict(stall_timeout_s=0), dict(device_rate=0)])
def test_mic_bad_settings_are_config_errors(monkeypatch, bad):
    _fake_sounddevice(monkeypatch, [USB], signal=_stereo(10), block=_blocks())
    with pytest.raises(ConfigError):
        S.MicSource(**bad)


@pytest.mark.parametrize("channel", ["mix", 1])
def test_mic_native_rate_is_resampled_to_the_program_rate(monkeypatch, channel):
    """44.1 kHz stereo in device blocks of random size -> 16 kHz mono in chunks of exactly `chunk`,
    equal to resample_poly of the mix-down (or the picked channel) of the whole signal."""
    x = _stereo(44100)
    fake = _fake_sounddevice(monkeypatch, [USB], signal=x, block=_blocks(1))
    with S.MicSource(chunk=333, rate=16000, channel=channel, buffer_s=2.0, stall_timeout_s=0.5) as src:
        assert (src.device_rate, src.rate, src.channels) == (44100, 16000, 2)
        got = []
        with pytest.raises(S.MicStallError, match="delivered nothing for 0.5 s"):
            for c in src:
                assert c.dtype == np.float32 and c.shape == (333,)
                got.append(c)
        st = src.stats()
    kw = fake.streams[0].kw
    assert kw["samplerate"] == 44100 and kw["blocksize"] == 0 and kw["latency"] == "high"
    mono = x.astype(np.float64).mean(axis=1) if channel == "mix" else x[:, 1].astype(np.float64)
    ref = resample_poly(mono, 160, 441)
    y = np.concatenate(got)
    assert len(y) == 333 * ((len(ref) - 10) // 333)      # every whole chunk (the filter holds back 10 samples)
    np.testing.assert_allclose(y, ref[:len(y)], atol=2e-6)          # float32 output
    assert st["audio_s"] == pytest.approx(1.0) and st["overflows"] == 0 and st["start_s"] is not None


def test_mic_same_rate_is_passed_through(monkeypatch):
    x = _stereo(4800)
    _fake_sounddevice(monkeypatch, [dict(USB, default_samplerate=16000.0)], signal=x, block=_blocks(2, 1, 500))
    with S.MicSource(chunk=320, channel=0, stall_timeout_s=0.3) as src:
        got = []
        with pytest.raises(S.MicStallError):
            got.extend(src)
    assert np.array_equal(np.concatenate(got), x[:len(got) * 320, 0])


def test_mic_ring_overflow_is_counted_and_reported(monkeypatch, caplog):
    """A consumer that does not read: blocks that do not fit the ring are dropped whole and counted,
    and what was kept is the start of the signal, in order."""
    x = np.arange(16000 * 2, dtype=np.float32)[:, None].repeat(2, axis=1) / 1e5
    fake = _fake_sounddevice(monkeypatch, [dict(USB, default_samplerate=16000.0)], signal=x,
                             block=iter([1000] * 32))
    src = S.MicSource(chunk=4000, rate=16000, buffer_s=0.5, stall_timeout_s=0.3)   # ring: 8000 samples
    fake.streams[0].done.wait(5)
    assert src.overflows == 24 and src.stats()["dropped_s"] == pytest.approx(1.5)
    with caplog.at_level("WARNING", logger="essm_stream.kws.sources"):
        a, b = next(src), next(src)
    assert "24 device block(s) dropped" in caplog.text
    np.testing.assert_array_equal(np.concatenate([a, b]), x[:8000, 0])
    with pytest.raises(S.MicStallError):
        next(src)
    src.close()


def test_mic_that_never_starts(monkeypatch):
    _fake_sounddevice(monkeypatch, [USB], signal=_stereo(10), block=_blocks(), stop_after=0)
    with S.MicSource(start_timeout_s=0.2) as src:
        with pytest.raises(S.MicStallError, match="delivered nothing within 0.2 s of starting"):
            next(src)
        assert src.stats()["start_s"] is None


def test_list_input_devices_and_table(monkeypatch):
    _fake_sounddevice(monkeypatch, [{"name": "HDMI", "max_input_channels": 0, "hostapi": 0}, USB,
                                    {"name": "pulse", "max_input_channels": 32, "default_samplerate": 48000.0,
                                     "hostapi": 0}], default=2)
    devs = S.list_input_devices()
    assert [(d["index"], d["default"], d["hostapi_name"]) for d in devs] == [(1, False, "ALSA"), (2, True, "ALSA")]
    table = S.format_input_devices(devs)
    assert "usb mic" in table and "48000 Hz" in table and "HDMI" not in table
    assert table.splitlines()[2].startswith("*")
    assert "no audio input devices" in S.format_input_devices([])


def test_demo_list_devices_and_bad_mic_options(monkeypatch, capsys):
    from essm_stream.cli import main
    _fake_sounddevice(monkeypatch, [USB])
    assert main(["demo", "--list-devices"]) == 0
    assert "usb mic" in capsys.readouterr().out
    for bad in (["--channel", "left"], ["--latency", "-1"], ["--seconds", "0"]):
        assert main(["demo", "--mic", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("essm-stream demo: error:") and len(err.splitlines()) == 1


_ALSA_CHILD = """
import json, sys
import numpy as np
from essm_stream.kws import sources as S
try:
    with S.MicSource(device="essm_file_in", device_rate=48000, chunk=320, buffer_s=1.0) as src:
        got = np.concatenate([next(src) for _ in range(40)])
        st = src.stats()
except S.MicUnavailableError as e:
    print(json.dumps({"skip": str(e)}))
    sys.exit(0)
np.save(sys.argv[1], got)
print(json.dumps({k: st[k] for k in ("device_rate", "channels", "overflows", "audio_s", "dropped_s")}))
"""


@pytest.mark.serial   # the unpaced device must outrun the reader: with another worker on the cores it may not
def test_mic_on_a_plain_alsa_device_through_portaudio(tmp_path):
    """Real PortAudio -> ALSA, no sound server and no sound card: an ALSA `file` PCM whose capture reads
    a raw 48 kHz stereo float32 file (defined in an .asoundrc under a private HOME). The plugin is not
    paced (its null slave runs as fast as it is read), so this checks the data path and the overflow
    accounting, not real time: the first second equals resample_poly of the file's mix-down, and the
    blocks the device delivered beyond the 1 s ring are counted and dropped whole."""
    import json
    import os
    import subprocess
    from pathlib import Path

    rng = np.random.default_rng(5)
    x = (0.2 * rng.standard_normal((48000 * 3, 2))).astype("<f4")
    x.tofile(tmp_path / "in.raw")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(
        'pcm.essm_file_in {\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n'
        f'  infile "{tmp_path / "in.raw"}"\n  format "raw"\n}}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "ALSA_"))}
    env.update(HOME=str(home), PYTHONPATH=str(Path(S.__file__).resolve().parents[2]))
    r = subprocess.run([sys.executable, "-c", _ALSA_CHILD, str(tmp_path / "got.npy")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1500:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if "skip" in out:
        pytest.skip(f"no ALSA through PortAudio here: {out['skip']}")
    assert out["device_rate"] == 48000 and out["channels"] == 2
    got = np.load(tmp_path / "got.npy")
    ref = resample_poly(x.astype(np.float64).mean(axis=1), 1, 3)
    np.testing.assert_allclose(got, ref[:len(got)], atol=1e-6)
    assert out["overflows"] > 0 and out["dropped_s"] > 0          # it outran the consumer: counted, not hidden


# ---- the streaming resampler ---------------------------------------------------------------------
@pytest.mark.parametrize("sr_in,sr_out", [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000),
                                          (16000, 44100), (16000, 16000)])
def test_resampler_equals_resample_poly_and_chunking_changes_nothing(sr_in, sr_out):
    rng = np.random.default_rng(sr_in + sr_out)
    x = rng.standard_normal(9000)
    one = S.StreamingResampler(sr_in, sr_out)
    y1 = np.concatenate([one.process(x), one.flush()])
    np.testing.assert_allclose(y1, resample_poly(x, sr_out, sr_in), rtol=0, atol=1e-12)
    for trial in range(3):
        r = S.StreamingResampler(sr_in, sr_out)
        cuts = np.concatenate([[0], np.sort(rng.integers(0, len(x), 25)), [len(x)]])
        parts = [r.process(x[a:b]) for a, b in zip(cuts[:-1], cuts[1:])] + [r.flush()]
        assert np.array_equal(np.concatenate(parts), y1)          # bitwise: chunked == one-shot
        assert r.n_in == 0 and r.n_out == 0                        # flush() starts a new signal


def test_resampler_emits_as_soon_as_it_can():
    r = S.StreamingResampler(44100, 16000)
    out = sum(len(r.process(np.ones(441))) for _ in range(100))     # 1 s in 10 ms blocks
    assert 16000 - out == -(-(r.half_len + 1) // r.down) - 1 == 10  # held back: the filter's half-length (0.6 ms)
    with pytest.raises(ConfigError):
        S.StreamingResampler(44100.5, 16000)


def test_ring_is_fifo_with_wraparound():
    ring = S.SampleRing(10)
    assert ring.write(np.arange(6)) and len(ring) == 6
    assert np.array_equal(ring.read(4), [0, 1, 2, 3])
    assert ring.write(np.arange(6, 14))                             # wraps
    assert not ring.write(np.arange(3)) and ring.overflows == 1 and ring.dropped == 3
    assert np.array_equal(ring.read(), np.arange(4, 14))
    assert len(ring.read(timeout=0.01)) == 0


def test_wav_roundtrip_and_chunks(tmp_path):
    x = (np.sin(np.arange(16000) / 10) * 10000).astype(np.int16)
    p = tmp_path / "a.wav"
    S.write_wav(p, x)
    src = S.WavSource(p, chunk=700, realtime=False)
    chunks = list(src)
    assert np.array_equal(np.concatenate(chunks), x)
    assert [len(c) for c in chunks[:-1]] == [700] * (len(chunks) - 1)
    S.write_wav(tmp_path / "b.wav", x, sr=4000)
    with pytest.raises(ConfigError, match="4000 Hz"):
        S.WavSource(tmp_path / "b.wav")
    with pytest.raises(ConfigError, match="does not exist"):
        S.WavSource(tmp_path / "none.wav")


def test_wav_at_another_rate_is_resampled_like_the_mic_path(tmp_path):
    from scipy.signal import resample_poly
    t = np.arange(44100) / 44100
    x = (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)      # 1 s of 440 Hz at 44.1 kHz
    S.write_wav(tmp_path / "c.wav", x, sr=44100)
    src = S.WavSource(tmp_path / "c.wav", chunk=320, realtime=False)
    y = np.concatenate(list(src))
    assert src.file_sr == 44100 and src.sr == 16000 and len(y) == 16000 and y.dtype == np.int16
    ref = resample_poly(x.astype(np.float64), 160, 441)               # the same filter, one shot
    assert np.max(np.abs(y.astype(np.float64) - ref)) <= 0.5 + 1e-6   # int16 rounding only
    spec = np.abs(np.fft.rfft(y.astype(np.float64)))
    assert abs(np.argmax(spec) - 440) <= 1                            # the tone stays at 440 Hz (1 Hz bins)


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
