"""Stage 2: utterance banks -> augmented streams -> frontend features + per-step training targets.

Augmentation (each stream is one "recording"; each utterance in it one speaker draw):

- speaker: resampling by r in [0.88, 1.14] (pitch, tempo and formants together: a vocal-tract-length
  change), level -10..0 dB per utterance;
- room: an image-source room impulse response (`pyroomacoustics.ShoeBox`: room 3-9 x 3-7 x 2.4-3.5 m,
  RT60 0.15-0.8 s via inverse Sabine, random source/microphone positions) on 70% of the streams;
- noise: coloured (white..violet), babble (other voices' keyword-free sentences), non-stationary
  (coloured noise under a random slow envelope, with bursts), SNR 0-30 dB or none;
- channel: a random microphone response (high-pass 60-300 Hz, low-pass 3.4-7.8 kHz, one peaking
  band +-8 dB), a 16 k -> 44.1 k -> 16 k resampling round trip, a slow AGC, level -35..-3 dBFS
  and rare clipping.

Targets per model step (one step per 80 ms embedding, or per `hop` samples for log-mel): a keyword
ending at e owns the steps whose end time lies in [e - 0.08, e + 0.8] (the max-pool window of the
stream loss); steps from the keyword's start to e + 1.0 s outside that window are ignored (-1);
every other step is `unknown` when speech was heard in its last 0.4 s, else `silence`.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from scipy.signal import butter, fftconvolve, lfilter, resample_poly, sosfilt

from . import data as D
from . import voices as V

log = logging.getLogger(__name__)
SR = D.SR
KW_ID = {k: i for i, k in enumerate(D.KEYWORDS)}
RATIOS = [(8, 9), (9, 10), (14, 15), (19, 20), (1, 1), (1, 1), (21, 20), (11, 10), (8, 7)]   # out/in


# ----------------------------------------------------------------------------- perturbations
def perturb_speaker(x: np.ndarray, rng, speaker: str = "resample") -> np.ndarray:
    """Resample by r (played back at 16 kHz: pitch, formants and tempo scale by in/out). speaker="wide"
    first changes tempo, pitch and formants independently (perturb.random_speaker), then resamples
    half of the utterances."""
    if speaker == "wide":
        from .perturb import random_speaker
        x, _ = random_speaker(x, rng)
        if rng.random() < 0.5:
            return x * 10 ** (rng.uniform(-10, 0) / 20)
    elif speaker != "resample":
        raise D.ConfigError(f"speaker perturbation must be 'resample' or 'wide', got {speaker!r}")
    up, down = RATIOS[int(rng.integers(len(RATIOS)))]
    y = resample_poly(x.astype(np.float64), up, down) if up != down else x.astype(np.float64)
    return y * 10 ** (rng.uniform(-10, 0) / 20)


def room_rir(rng) -> np.ndarray:
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(3, 9), rng.uniform(3, 7), rng.uniform(2.4, 3.5)])
    rt60 = rng.uniform(0.15, 0.8)
    try:
        e_abs, max_order = pra.inverse_sabine(rt60, dims)
    except ValueError:
        e_abs, max_order = 0.5, 8
    room = pra.ShoeBox(dims, fs=SR, materials=pra.Material(e_abs), max_order=min(int(max_order), 12))
    src = dims * rng.uniform(0.1, 0.9, 3)
    mic = dims * rng.uniform(0.1, 0.9, 3)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    h = np.asarray(room.rir[0][0], dtype=np.float64)
    return h / (np.abs(h).max() + 1e-12)


def mic_response(x: np.ndarray, rng) -> np.ndarray:
    hp = rng.uniform(60, 300)
    lp = rng.uniform(3400, 7800)
    y = sosfilt(butter(2, hp, "highpass", fs=SR, output="sos"), x)
    y = sosfilt(butter(4, lp, "lowpass", fs=SR, output="sos"), y)
    # one peaking band (RBJ biquad)
    f0, g, q = rng.uniform(300, 5000), rng.uniform(-8, 8), rng.uniform(0.7, 3)
    A, w = 10 ** (g / 40), 2 * np.pi * f0 / SR
    al = np.sin(w) / (2 * q)
    b = np.array([1 + al * A, -2 * np.cos(w), 1 - al * A])
    a = np.array([1 + al / A, -2 * np.cos(w), 1 - al / A])
    return lfilter(b / a[0], a / a[0], y)


def agc(x: np.ndarray, rng, target_db: float = -20.0) -> np.ndarray:
    """A slow automatic gain control: gain follows the 0.5 s RMS towards target, limited to +-20 dB."""
    n = int(0.1 * SR)
    m = len(x) // n
    if m < 2:
        return x
    r = np.sqrt(np.mean(x[: m * n].reshape(m, n) ** 2, axis=1)) + 1e-6
    g_db = np.clip(target_db - 20 * np.log10(r), -20, 20)
    a = rng.uniform(0.05, 0.3)
    sm = np.empty(m)
    acc = g_db[0]
    for i in range(m):
        acc += a * (g_db[i] - acc)
        sm[i] = acc
    g = np.interp(np.arange(len(x)), np.arange(m) * n + n / 2, 10 ** (sm / 20))
    return x * g


def round_trip(x: np.ndarray) -> np.ndarray:
    return resample_poly(resample_poly(x, 441, 160), 160, 441)[: len(x)]


def nonstationary(n: int, rng) -> np.ndarray:
    x = D.colored_noise(n, list(D.COLORS.values())[int(rng.integers(len(D.COLORS)))], rng)
    k = max(2, n // int(0.25 * SR))
    env = np.interp(np.arange(n), np.linspace(0, n, k), rng.uniform(0.1, 1.0, k) ** 2)
    for _ in range(int(rng.integers(0, 1 + n // (4 * SR)))):           # bursts (door, clatter)
        s, L = int(rng.integers(n)), int(rng.uniform(0.05, 0.4) * SR)
        env[s:s + L] += rng.uniform(1, 4)
    y = x * env
    return y / (np.sqrt(np.mean(y ** 2)) + 1e-12)


def noise_of(kind: str, n: int, rng, babble_pool) -> np.ndarray:
    if kind == "babble" and not babble_pool:
        raise D.ConfigError("babble noise needs a pool of keyword-free speech (none was found for this voice)")
    if kind == "babble":
        return D.babble(n, babble_pool, rng, voices=(3, 7))
    if kind == "nonstationary":
        return nonstationary(n, rng)
    return D.colored_noise(n, D.COLORS[kind] if kind in D.COLORS else 0.0, rng)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float | None) -> np.ndarray:
    if snr_db is None:
        return speech
    act = np.abs(speech) > 1e-4 * (np.abs(speech).max() + 1e-12)
    rms_s = np.sqrt(np.mean(speech[act] ** 2)) if act.any() else 1e-3
    return speech + noise * rms_s * 10 ** (-snr_db / 20)


# ----------------------------------------------------------------------------- composition
def compose(items: list[dict], rng, gap_s=(0.2, 1.5), perturb: bool = True, max_s: float | None = None,
            speaker: str = "resample"):
    """Concatenate utterances with silent gaps; returns (speech track, events [(label, start_s, end_s)],
    speech activity per sample). Keyword times come from the bank (kw_start/kw_end)."""
    parts, events, t = [], [], int(rng.uniform(*gap_s) * SR)
    parts.append(np.zeros(t))
    for j in items:
        a = j["audio"].astype(np.float64)
        if perturb:
            L0 = len(a)
            a = perturb_speaker(a, rng, speaker)
            scale = len(a) / max(1, L0)
        else:
            a = a * 10 ** (rng.uniform(-6, 0) / 20)
            scale = 1.0
        if j.get("label"):
            events.append((j["label"], t / SR + j["kw_start"] * scale, t / SR + j["kw_end"] * scale))
        else:
            events.append(("speech", t / SR, (t + len(a)) / SR))
        parts.append(a)
        t += len(a)
        g = int(rng.uniform(*gap_s) * SR)
        parts.append(np.zeros(g))
        t += g
        if max_s is not None and t > max_s * SR:
            break
    x = np.concatenate(parts)
    return x, events


def augment(speech: np.ndarray, rng, babble_pool, p_room=0.7, snr=(0, 30), p_clean=0.15, channel=True):
    x = speech
    if rng.random() < p_room:
        x = fftconvolve(x, room_rir(rng))[: len(x)]
    if rng.random() >= p_clean:
        kind = ["white", "pink", "brown", "blue", "violet", "babble", "babble", "nonstationary", "nonstationary"][
            int(rng.integers(9))]
        x = mix_at_snr(x, noise_of(kind, len(x), rng, babble_pool), rng.uniform(*snr))
    else:
        x = x + 10 ** (rng.uniform(-90, -60) / 20) * rng.standard_normal(len(x))     # dither floor
    if channel:
        if rng.random() < 0.7:
            x = mic_response(x, rng)
        if rng.random() < 0.3:
            x = round_trip(x)
        if rng.random() < 0.3:
            x = agc(x, rng)
    x = x * 10 ** (rng.uniform(-35, -3) / 20) / (np.abs(x).max() + 1e-12)
    if rng.random() < 0.05:
        x = np.clip(x * rng.uniform(1.5, 4), -1, 1)
    return x.astype(np.float32)


def step_targets(events, speech: np.ndarray, n_steps: int, end_time, win_s=(-0.08, 0.8), ignore_after_s=1.0):
    """(y (n_steps,) int8 background labels with -1 = ignore, kw (n_keywords, 3) [class, first, last step])."""
    t = np.array([end_time(i) for i in range(n_steps)])
    # speech heard in the last 0.4 s of each step
    env = np.abs(speech) > 1e-3 * (np.abs(speech).max() + 1e-12)
    cs = np.concatenate([[0], np.cumsum(env)])
    e = np.clip((t * SR).astype(int), 0, len(speech))
    s = np.clip(e - int(0.4 * SR), 0, len(speech))
    y = np.where(cs[e] - cs[s] > 0.05 * SR, D.UNKNOWN, D.SILENCE).astype(np.int8)
    kws = []
    for lab, st, en in events:
        if lab not in KW_ID:
            continue
        y[(t >= st) & (t <= en + ignore_after_s)] = -1
        idx = np.nonzero((t >= en + win_s[0]) & (t <= en + win_s[1]))[0]
        if len(idx):
            kws.append((KW_ID[lab], int(idx[0]), int(idx[-1])))
    return y, np.array(kws, dtype=np.int64).reshape(-1, 3)


# ----------------------------------------------------------------------------- stage driver
_G: dict = {}


def _frontend(kind: str):
    if kind not in _G:
        if kind == "embedding":
            from .embed import SpeechEmbedding, embedding_params
            _G[kind] = SpeechEmbedding(embedding_params(), normalize=False)
        else:
            from .frontend import LogMel, frontend_params
            _G[kind] = LogMel(frontend_params(), normalize=False)
    return _G[kind]


def features_raw(kind: str, x: np.ndarray, stack: int = 8):
    """(steps, d) unnormalised features and the step end-time function, for either frontend."""
    fe = _frontend(kind)
    F = fe.features(x)
    if kind == "embedding":
        return F, fe.frame_end_time
    m = len(F) // stack                                  # log-mel: `stack` frames per step (80 ms)
    return F[: m * stack].reshape(m, stack * F.shape[1]), (lambda i: fe.frame_end_time(i * stack + stack - 1))


def babble_pool_from(banks_dir, family: str, n: int = 300, seed: int = 0, exclude_voice: str = "",
                     exclude_speakers=()):
    """Keyword-free sentences of `family`'s voices for babble. Training streams take babble from their
    own family, so a held-out family is heard neither as speech nor as babble in training; a speaker
    fold's held-out speakers (exclude_speakers, voices.speaker_of names) are left out of the babble too.
    family=None: any family's voices (the fallback when a fold leaves a family one voice)."""
    rng = np.random.default_rng(seed)
    files = sorted((Path(banks_dir) / "train").glob("*.npz"))
    pool = []
    skip = set(exclude_speakers)
    for f in files:
        if (family is not None and not f.name.startswith(family + "_")) or f.stem == exclude_voice.replace(":", "_", 1):
            continue
        if V.speaker_of(f.stem.replace("_", ":", 1)) in skip:
            continue
        pool += [j["audio"] for j in V.load_bank(f) if j["kind"] == "neg"]
    if not pool:
        return None
    idx = rng.permutation(len(pool))[:n]
    return [pool[i] for i in idx]


def render_train_stream(items, rng, babble_pool, kind: str, max_s: float = 60.0, speaker: str = "resample"):
    speech, events = compose(items, rng, max_s=max_s, speaker=speaker)
    x = augment(speech, rng, babble_pool)
    F, end_time = features_raw(kind, x)
    y, kw = step_targets(events, speech, len(F), end_time)
    return F.astype(np.float16), y, kw


def _render_voice(args):
    bank, out, kind, renders, seed, babble_files, speaker, skip_speakers = args
    if Path(out).is_file():
        return out, 0
    items = V.load_bank(bank)
    voice = items[0]["voice"] if items else ""
    pool = babble_pool_from(babble_files, V.family_of(voice), n=200, seed=seed, exclude_voice=voice,
                            exclude_speakers=skip_speakers) \
        if babble_files and items else None
    if babble_files and items and pool is None:        # the fold left the family no other voice: any family's
        pool = babble_pool_from(babble_files, None, n=200, seed=seed, exclude_voice=voice,
                                exclude_speakers=skip_speakers)
    rng = np.random.default_rng(seed)
    Xs, ys, kws, lens = [], [], [], []
    for r in range(renders):
        order = rng.permutation(len(items))
        for c in range(0, len(order), 40):                  # ≈ 40 utterances per stream (30-60 s)
            F, y, kw = render_train_stream([items[i] for i in order[c:c + 40]], rng, pool, kind, speaker=speaker)
            Xs.append(F)
            ys.append(y)
            kws.append(kw + np.array([0, sum(lens), sum(lens)]))
            lens.append(len(F))
    tmp = Path(out).with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, X=np.concatenate(Xs), y=np.concatenate(ys), kw=np.concatenate(kws), lens=np.array(lens),
             voice=np.array(items[0]["voice"] if items else ""))
    tmp.replace(out)
    return out, int(sum(lens))


def render_train(banks_dir, out_dir, kind: str = "embedding", renders: dict | None = None, workers: int = 2,
                 seed: int = 0, voices: list[str] | None = None, speaker: str = "resample", fold: str | None = None):
    """One features file per training bank: <out>/<kind>/<voice>.npz (X float16, y, kw, lens).

    fold (a voices.fold name, e.g. a held-out-voices fold): its test speakers are never babble, and
    without `voices` the fold's training voices are rendered; a voice of a test speaker is refused."""
    from concurrent.futures import ProcessPoolExecutor

    renders = renders or {"espeak": 1, "flite": 1, "festival": 1}
    out = Path(out_dir) / kind
    out.mkdir(parents=True, exist_ok=True)
    skip = ()
    if fold is not None:
        f = V.fold(fold)
        skip = {V.speaker_of(v) for v in f["test"]}
        if V.VAL_SEP in V.fold_name(fold):             # recorded validation speakers are never heard either
            skip |= {V.speaker_of(v) for v in f["val"] if V.family_of(v) != "espeak"}
        skip = tuple(sorted(skip))
        if voices is None:
            voices = list(f["train"])
        bad = [v for v in voices if V.speaker_of(v) in skip]
        if bad:
            raise D.ConfigError(f"voices {bad} are held-out (or validation) speakers of fold {fold!r}: "
                                "not rendered for training")
    if voices is None:                       # espeak-ng: every 3rd training variant, every 2nd validation one
        sv = V.espeak_voices(test_only=False)[::3] + V.espeak_voices(test_only=True)[::2]
        voices = list(sv) + list(V.family_voices("flite")) + list(V.family_voices("festival"))
    jobs = []
    for i, f in enumerate(sorted((Path(banks_dir) / "train").glob("*.npz"))):
        voice = f.stem.replace("_", ":", 1)
        if voice not in voices:
            continue
        fam = V.family_of(voice)
        jobs.append((str(f), str(out / f.name), kind, renders.get(fam, 1), seed * 1000 + i, str(banks_dir), speaker,
                     skip))
    prio = {"flite:awb": 0, "flite:rms": 0, "espeak": 1, "festival": 2, "flite": 3}
    jobs.sort(key=lambda j: (prio.get(Path(j[0]).stem.replace("_", ":", 1),
                                      prio[V.family_of(Path(j[0]).stem.replace("_", ":", 1))]), j[0]))
    done = []
    with ProcessPoolExecutor(workers) as ex:
        for o, n in ex.map(_render_voice, jobs):
            if n:
                log.info("%s: %d steps", o, n)
            done.append(o)
    return done


def merge_features(out_dir, *dirs) -> list[str]:
    """One features file per voice in out_dir: the streams of every dir that has the voice, in order
    (a voice missing from the first dir is skipped); files are written atomically, existing ones kept."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for f in sorted(Path(dirs[0]).glob("*.npz")):
        dst = out / f.name
        if dst.is_file():
            continue
        Xs, ys, kws, lens = [], [], [], []
        voice = ""
        for d in dirs:
            g = Path(d) / f.name
            if not g.is_file():
                continue
            z = np.load(g)
            off = sum(int(n) for n in lens)
            Xs.append(z["X"])
            ys.append(z["y"])
            kws.append(z["kw"] + np.array([0, off, off]))
            lens += [int(n) for n in z["lens"]]
            voice = str(z["voice"])
        tmp = dst.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, X=np.concatenate(Xs), y=np.concatenate(ys), kw=np.concatenate(kws).reshape(-1, 3),
                 lens=np.array(lens), voice=np.array(voice))
        tmp.replace(dst)
        done.append(str(dst))
    return done


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="render training streams and their features")
    ap.add_argument("banks")
    ap.add_argument("out")
    ap.add_argument("--kind", default="embedding", choices=("embedding", "logmel"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--renders", default="", help='JSON {"espeak": 2, "flite": 3, "festival": 3}')
    ap.add_argument("--voices", default="", help="comma-separated voices, or 'espeak-train' (default: the "
                    "standard subset: every 3rd espeak-ng training variant, every 2nd validation one, all others)")
    ap.add_argument("--speaker", default="resample", choices=("resample", "wide"),
                    help="per-utterance speaker perturbation: resampling only, or independent tempo / pitch / "
                    "formant changes first (kws/perturb.py)")
    ap.add_argument("--seed", type=int, default=0, help="render seed (new rooms, noise, speakers per seed)")
    ap.add_argument("--hold-out", default=None, type=V.fold_name, metavar="FOLD",
                    help="a fold (family, or held-out voices 'festival:ked_diphone,festival:cmu_us_slt_arctic_hts'): "
                    "its test speakers are never babble; default voices = its training voices")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    voices = None
    if a.voices == "espeak-train":
        voices = list(V.espeak_voices(test_only=False))
    elif a.voices:
        voices = a.voices.split(",")
    render_train(a.banks, a.out, a.kind, json.loads(a.renders) if a.renders else None, a.workers, seed=a.seed,
                 voices=voices, speaker=a.speaker, fold=a.hold_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
