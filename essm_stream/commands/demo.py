"""essm-stream demo: the bundled keyword spotter on a live stream with an energy-aware budget."""
HELP = "keyword spotting on a (bundled, recorded or live) audio stream with an energy-aware budget controller"
DESCRIPTION = """\
Runs the bundled ES-SSM keyword spotter (yes no up down left right on off stop go) on a stream and
lets an energy-aware controller pick the spectral budget K every 20 ms step: K drops to 1 while the
input is near its noise floor, and a token-bucket energy controller (average power = --budget x the
power at K = 32) decides while there is sound. Detections print as they happen; K and CPU time per
step show live; a summary and a plot come at the end.

  essm-stream demo                  the bundled 40 s recording (unseen voices), paced in real time
  essm-stream demo --fast           the same, as fast as possible
  essm-stream demo --mic            the default microphone (Ctrl-C to stop)
  essm-stream demo --list-devices   the audio inputs PortAudio sees (then --mic --device INDEX|NAME)
  essm-stream demo --wav FILE.wav   a 16-bit WAV (any rate >= 8 kHz; resampled to 16 kHz)
  essm-stream demo --K 4            a fixed budget instead of the controller

On a first run the engine's numba kernel compiles in a background thread (≈ 5 s of CPU) while the
numpy reference kernel steps the same state, so audio flows at once; --compile-first waits for it.
The summary's start-up lines say what the start-up and that compile cost.
"""

# the summary's start-up line (bench/targets.py reads it): CPU and wall seconds from process start
STARTUP_RE = r"start-up: ([0-9.]+) s CPU, ([0-9.]+) s wall"
# the kernel's line: the compile thread's CPU seconds, and the start-up with that compile added
COMPILE_RE = r"engine kernel: ([0-9.]+) s CPU .*?; start-up with it: ([0-9.]+) s CPU"
# the whole process's CPU seconds (every thread) at the end of the stream, before the plot
WHOLE_RE = r"whole run: ([0-9.]+) s CPU"


def add_arguments(p):
    from essm_stream.commands._args import fraction, nonneg_int, positive_float, positive_int

    src = p.add_mutually_exclusive_group()
    src.add_argument("--mic", action="store_true", help="listen to the microphone")
    src.add_argument("--wav", help="a 16-bit WAV file (mono or stereo, any rate >= 8 kHz) instead of the bundled recording")
    src.add_argument("--list-devices", action="store_true", help="list the audio input devices and exit")
    p.add_argument("--device", default=None, help="microphone device: index or a unique part of its name "
                   "(see --list-devices); default: the system's default input")
    p.add_argument("--device-rate", type=positive_int, default=None,
                   help="open the microphone at this rate (Hz) instead of its native one; the audio is "
                        "resampled to the program's rate either way")
    p.add_argument("--channel", default="mix", help="microphone channel: 'mix' (average) or an index")
    p.add_argument("--latency", default="high",
                   help="microphone latency: 'high' (safe), 'low', or seconds; the device picks its block size")
    p.add_argument("--blocksize", type=nonneg_int, default=0,
                   help="microphone block size in device samples (0: the device chooses)")
    p.add_argument("--save-audio", default=None,
                   help="also write the audio the spotter heard to this WAV (kept in memory until the end)")
    p.add_argument("--seconds", type=positive_float, default=None, help="stop after this many seconds of audio")
    p.add_argument("--fast", action="store_true", help="do not pace the recording in real time")
    p.add_argument("--program", default=None, help="a keyword program (.essm); default: the bundled one")
    p.add_argument("--K", type=positive_int, default=None, help="fixed budget K instead of the energy-aware controller")
    p.add_argument("--budget", type=fraction, default=0.5,
                   help="controller's average power target as a fraction of the power at K = K̄")
    p.add_argument("--threshold", type=fraction, default=None, help="detection threshold on the smoothed posterior")
    p.add_argument("--chunk", type=positive_int, default=320, help="samples per chunk read from the source (20 ms)")
    p.add_argument("--plot", default="runs/kws_demo.png", help="write the stream plot here ('' for none)")
    p.add_argument("--quiet", action="store_true", help="no live status line")
    p.add_argument("--compile-first", action="store_true",
                   help="compile (or load) the engine's kernel before the stream starts instead of in the background "
                        "while the numpy reference kernel steps the first frames")


def _channel(v):
    from essm_stream.errors import ConfigError
    if v == "mix":
        return v
    try:
        c = int(v)
    except ValueError:
        c = -1
    if c < 0:
        raise ConfigError(f"--channel must be 'mix' or a channel index >= 0, got {v!r}")
    return c


def _latency(v):
    from essm_stream.errors import ConfigError
    if v in ("high", "low"):
        return v
    try:
        x = float(v)
    except ValueError:
        x = -1.0
    if not x > 0:
        raise ConfigError(f"--latency must be 'high', 'low' or seconds > 0, got {v!r}")
    return x


def _print_mic_stats(st):
    start = "never" if st["start_s"] is None else f"{st['start_s']:.2f} s"
    ratio = "n/a" if st["realtime_ratio"] is None else f"{st['realtime_ratio']:.3f}"
    print(f"  microphone: first block {start} after start; then {st['steady_audio_s']:.2f} s of audio in "
          f"{st['steady_wall_s']:.2f} s wall (real-time ratio {ratio}); latency {st['latency_s']:.3f} s; "
          f"ring overflows {st['overflows']} ({st['dropped_s']:.2f} s dropped), "
          f"PortAudio input overflows {st['input_overflows']}")


def _controller(prog, a):
    """(controller or None, description)."""
    if a.K is not None:
        return None, f"fixed K={a.K}"
    try:
        from essm_stream.kws.control import kws_energy_controller
        ctl = kws_energy_controller(prog, fraction=a.budget)
    except ImportError as e:
        import logging
        logging.getLogger(__name__).warning("controllers package unavailable (%s): running at K = K̄", e)
        return None, f"fixed K={prog.k_max} (no controllers package)"
    return ctl, f"energy-aware: K=1 in quiet, token bucket at {a.budget:.0%} of K={prog.k_max} power while sound"


def _process_start_wall() -> float:
    """perf_counter() value at this process's start (Linux: /proc/self/stat's start time), else now."""
    import os
    import time
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.perf_counter() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter()


def run(a):
    import sys
    import time

    t_proc = _process_start_wall()

    from essm_stream.errors import ConfigError
    from essm_stream.kws.evaluate import score_stream
    from essm_stream.kws.sources import ArraySource, MicSource, WavSource
    from essm_stream.kws.spotter import KeywordSpotter, load_program

    if a.list_devices:
        from essm_stream.kws.sources import format_input_devices, list_input_devices
        print(format_input_devices(list_input_devices()))
        return 0
    if a.seconds is not None and a.seconds <= 0:
        raise ConfigError(f"--seconds must be > 0, got {a.seconds}")
    if a.save_audio:
        import os
        from pathlib import Path
        d = Path(a.save_audio).resolve().parent
        if Path(a.save_audio).is_dir() or not (d.is_dir() and os.access(d, os.W_OK)):
            raise ConfigError(f"--save-audio {a.save_audio!r}: cannot write a file there")

    from essm_stream.commands._args import check_inputs, check_outputs

    check_inputs(("--wav", a.wav), ("--program", a.program))
    check_outputs(("--plot", a.plot))          # before the run, not after 40 s of audio
    _channel(a.channel), _latency(a.latency)   # checked with or without --mic
    prog = load_program(a.program)
    fe = prog.frontend
    if not isinstance(fe, dict) or not {"sample_rate", "hop_length", "labels"} <= set(fe):
        raise ConfigError(f"{a.program} is not a keyword-spotting program (it has no audio frontend with "
                          "labels); build one with `essm-stream kws-train`")
    ctl, how = _controller(prog, a)
    sp = KeywordSpotter(prog, K=a.K if a.K is not None else prog.k_max, controller=ctl,
                        threshold=a.threshold, record=True, background_compile=not a.compile_first)
    events = None
    sr = int(prog.frontend["sample_rate"])          # the rate the program's frontend was built for
    if a.mic:
        src = MicSource(device=a.device, chunk=a.chunk, rate=sr, device_rate=a.device_rate,
                        channel=_channel(a.channel), latency=_latency(a.latency), blocksize=a.blocksize)
        what = (f"microphone {src.device_name!r} ({src.device_rate} Hz x {src.channels} ch, "
                f"{'mixed' if src.channel == 'mix' else f'channel {src.channel}'} -> {sr} Hz mono)")
    elif a.wav:
        src = WavSource(a.wav, chunk=a.chunk, realtime=not a.fast, rate=sr)
        what = a.wav if src.file_sr == sr else f"{a.wav} ({src.file_sr} Hz -> {sr} Hz)"
    else:
        from essm_stream.kws.recording import load_recording
        pcm, events = load_recording()
        src = ArraySource(pcm, chunk=a.chunk, realtime=not a.fast)
        what = f"bundled recording ({len(pcm) / 16000:.0f} s, {sum(e.label != 'speech' for e in events)} keywords)"
    print(f"keyword spotter: {prog!r}")
    print(f"source: {what}; budget: {how}; {'as fast as possible' if a.fast else 'real time'}")
    print(f"keywords: {' '.join(l for l in sp.labels if l not in ('unknown', 'silence'))}"
          f"   threshold {sp.threshold}, step {1000 * sp.hop_s:.0f} ms")
    tty = sys.stdout.isatty() and not a.quiet
    dets, n_samples, last_status, heard_audio = [], 0, -1.0, []
    pipeline_cpu = 0.0          # frontend + engine + detector: what the device really spends per step
    pipe_h0 = None              # hops done when the compiled kernel was first in place (pipeline_cpu from there)
    startup_cpu = startup_wall = startup_main_cpu = None
    t_wall = time.perf_counter()
    try:
        with src:
            for chunk in src:
                n_samples += len(chunk)
                if a.save_audio:
                    heard_audio.append(chunk)
                if pipe_h0 is None and sp.engine.compiled:
                    pipe_h0 = sp.hops
                c0 = time.thread_time()
                new = sp.process(chunk)
                if pipe_h0 is not None:   # (chunks stepped by the reference kernel are not the device's cost)
                    pipeline_cpu += time.thread_time() - c0
                if startup_cpu is None:   # process start -> first chunk through the whole pipeline
                    startup_cpu, startup_wall = time.process_time(), time.perf_counter() - t_proc
                    startup_main_cpu = time.thread_time()   # this thread's share (the compile runs beside it)
                for d in new:
                    dets.append(d)
                    line = f"  {d.time_s:7.2f} s  {d.label.upper():<6} score {d.score:.2f}   K={sp.K:<2d}"
                    print(("\r" + " " * 78 + "\r" if tty else "") + line, flush=True)
                t = n_samples / sr
                if tty and t - last_status >= 0.1:
                    last_status = t
                    print(f"\r  t={t:6.1f} s  K={sp.K:2d}  cpu/step={1e6 * sp.last_cpu_s:6.0f} µs  "
                          f"mean K={sp.mean_K:5.1f}", end="", flush=True)
                if a.seconds is not None and t >= a.seconds:
                    break
    except KeyboardInterrupt:
        pass
    wall = time.perf_counter() - t_wall
    if tty:
        print("\r" + " " * 78 + "\r", end="")
    ci = sp.engine.compile_info
    if ci is not None and not ci["done"]:
        print("waiting for the engine's kernel to finish compiling (it fills the cache for the next run) ...",
              flush=True)
    sp.engine.wait_compiled()     # (a background compile's error is raised here)
    ci = sp.engine.compile_info
    tr = sp.trace.arrays()
    first = 0 if ci is None else ci["handover_step"]   # first hop on the compiled kernel (None: none was)
    summary = _summary(sp, prog, tr, dets, events, n_samples / sr, wall, getattr(src, "overflows", 0), first)
    summary["pipeline_cpu_us"] = None if pipe_h0 is None else 1e6 * pipeline_cpu / max(sp.hops - pipe_h0, 1)
    summary["startup_cpu_s"], summary["startup_wall_s"] = startup_cpu, startup_wall
    summary["compile"], summary["startup_main_cpu_s"] = ci, startup_main_cpu
    summary["whole_cpu_s"] = time.process_time()
    if events is not None:
        heard = [e for e in events if e.end_s <= n_samples / sr]   # a cut-short run scores what it heard
        s, _ = score_stream(dets, heard, n_samples / sr)
        summary["score"] = s
    _print_summary(summary)
    if a.mic:
        _print_mic_stats(src.stats())
    if a.save_audio:
        import numpy as np

        from essm_stream.kws.sources import write_wav
        write_wav(a.save_audio, np.concatenate(heard_audio) if heard_audio else np.zeros(0, np.int16), sr=sr)
        print(f"audio heard: {a.save_audio}")
    if a.plot:
        _plot(a.plot, tr, dets, events, sp, what, how)
        print(f"plot: {a.plot}")
    return 0


def _summary(sp, prog, tr, dets, events, seconds, wall, overflows, first_compiled=0):
    """first_compiled: the first hop the compiled kernel ran (earlier ones ran the numpy reference
    kernel while it compiled; None: it never ran); the engine's CPU per step is over its hops."""
    import numpy as np

    from essm_stream.kws.control import E_MAC_J, macs_per_step

    cpu = tr["cpu_s"] if first_compiled is None else tr["cpu_s"][first_compiled:]
    out = {"seconds": seconds, "wall_s": wall, "steps": sp.hops, "detections": dets, "mean_K": sp.mean_K,
           "cpu_mean_us": 1e6 * float(np.mean(cpu)) if len(cpu) else float("nan"),
           "cpu_kernel": "numpy reference kernel" if first_compiled is None or not len(cpu) else
                         "compiled kernel" + (f", hops {first_compiled}+" if first_compiled else ""),
           "overflows": overflows}
    if len(tr["K"]):
        e = {k: E_MAC_J * macs_per_step(prog.cfg, int(k)) for k in set(tr["K"].tolist()) | {prog.k_max}}
        out["energy_model_j"] = float(sum(e[int(k)] for k in tr["K"]))
        out["energy_k32_j"] = len(tr["K"]) * e[prog.k_max]
    return out


def _print_summary(s):
    print(f"\nsummary: {s['seconds']:.1f} s of audio in {s['wall_s']:.1f} s, {s['steps']} steps, "
          f"{len(s['detections'])} detections")
    sc = s.get("score")
    if sc is not None:
        print(f"  hits {sc.hits}/{sc.keywords} keywords ({100 * sc.hit_rate:.0f}%), false accepts {sc.false_accepts}"
              + (f", latency after word end: median {sc.latency_median_s:.2f} s" if sc.latency_median_s is not None else ""))
    print(f"  mean K {s['mean_K']:.1f}, engine CPU {s['cpu_mean_us']:.0f} µs/step measured on this host "
          f"({s.get('cpu_kernel', 'compiled kernel')})")
    share = ""
    if s.get("pipeline_cpu_us"):
        share = f"; the ES-SSM engine is {100 * s['cpu_mean_us'] / s['pipeline_cpu_us']:.0f}% of it"
        print(f"  whole pipeline (frontend + engine + detector) CPU {s['pipeline_cpu_us']:.0f} µs/step{share}")
    if "energy_model_j" in s:
        r = s["energy_model_j"] / s["energy_k32_j"]
        print(f"  engine energy vs K=32 (MAC model, 0.1 nJ/MAC): {1e3 * s['energy_model_j']:.2f} mJ vs "
              f"{1e3 * s['energy_k32_j']:.2f} mJ = {100 * r:.0f}% ({100 * (1 - r):.0f}% saved"
              + (", of the engine only: the frontend's cost does not depend on K)" if share else ")"))
    if s["overflows"]:
        print(f"  source overflows (chunks dropped): {s['overflows']}")
    if s.get("startup_cpu_s") is not None:
        print(f"  start-up: {s['startup_cpu_s']:.2f} s CPU, {s['startup_wall_s']:.2f} s wall from process start to "
              "the first chunk through the pipeline (imports, ONNX sessions, engine; every thread's CPU)")
    ci = s.get("compile")
    if ci is not None and s.get("startup_main_cpu_s") is not None:
        how = {"compiled": "compiled", "cache": "loaded from the cache", "memory": "already in memory"}.get(ci["source"], "?")
        hop = "never" if ci["handover_step"] is None else f"from hop {ci['handover_step']}"
        print(f"  engine kernel: {ci['cpu_s']:.2f} s CPU {how} in a background thread ({ci['wall_s']:.2f} s wall; it "
              f"stepped {hop}, the numpy reference kernel before); start-up with it: "
              f"{s['startup_main_cpu_s'] + ci['cpu_s']:.2f} s CPU (this thread's to the first chunk + the compile's)")
    if s.get("whole_cpu_s") is not None:
        print(f"  whole run: {s['whole_cpu_s']:.2f} s CPU (every thread, from process start to the end of the stream: "
              "start-up, the kernel's compile, the audio; the plot not included)")


def _plot(path, tr, dets, events, sp, what, how):

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from essm_stream.fileio import save_figure

    t = tr["time_s"]
    fig, ax = plt.subplots(3, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]})
    P = tr["posterior"]
    kw = sp.keyword_ids
    if len(P):
        for j in kw:
            ax[0].plot(t, P[:, j], lw=0.9, label=sp.labels[j])
    ax[0].axhline(sp.threshold, color="k", ls=":", lw=0.8)
    for e in events or []:
        ax[0].axvspan(e.start_s, e.end_s, color="tab:green" if e.label != "speech" else "0.8", alpha=0.25, lw=0)
        if e.label != "speech":
            ax[0].text(e.start_s, 1.03, e.label, fontsize=7, color="tab:green")
    for d in dets:
        ax[0].plot([d.time_s], [d.score], "kv", ms=5)
    ax[0].set_ylim(0, 1.3)
    ax[0].set_ylabel("smoothed posterior")
    ax[0].legend(ncol=10, fontsize=7, loc="upper center", frameon=False)
    fig.suptitle(f"{what} — {how}   (▼ detection, green: keyword, grey: other speech)", fontsize=9)
    ax[1].step(t, tr["K"], where="post", lw=0.9)
    ax[1].set_ylabel("budget K")
    ax[1].set_ylim(0, sp.k_max + 2)
    ax[2].plot(t, 1e6 * tr["cpu_s"], lw=0.5)
    ax[2].set_ylabel("CPU µs / step")
    ax[2].set_xlabel("stream time (s)")
    if len(tr["cpu_s"]):
        ax[2].set_ylim(0, np.percentile(1e6 * tr["cpu_s"], 99.5) * 1.2)
    for a_ in ax:
        a_.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
