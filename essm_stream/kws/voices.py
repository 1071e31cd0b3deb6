"""Speech from several synthesizer families of Debian's main archive, for leave-one-family-out tests.

Families and voices (all installed by scripts/kws_install_system.sh):

- ``espeak``: espeak-ng, 8 English accents x its voice variants (formant synthesis);
- ``flite``: flite's built-in voices kal, kal16, awb, rms, slt (diphone and clustergen);
- ``festival``: festival with festvox-kallpc16k (kal_diphone), festvox-kdlpc16k (ked_diphone) and
  festvox-us-slt-hts (cmu_us_slt_arctic_hts); and festival's voices of other languages, each a
  recording of one real person reading English text through its own letter-to-sound rules (accented
  English of a new human timbre): Italian lp / pc, Czech dita / krb (a child) / machac / ph, Finnish
  lj / mv, Russian nsh, Catalan ona (`FESTIVAL_OTHER`). They say a keyword through a respelling that
  pocketsphinx's en-us model recognised as that keyword (`kws/respell.py`, table `respell.json`); a
  keyword no spelling of theirs passed is never rendered as that keyword by that voice. (Debian's
  hindi / marathi / telugu NSK voices, one speaker, crash festival 2.5 and are left out.)

Some voices of different engines are recordings of one person: flite's kal/kal16 and festival's
kal_diphone are the same diphone database, flite's slt and festival's slt HTS voice the same CMU
ARCTIC speaker. `SPEAKER` names that person, and `fold()` keeps a held-out family's speakers out of
training entirely (a test voice is never a person the model heard through another engine).

Every synthesizer output is read as int16 WAV at its own rate and resampled to 16 kHz with
`scipy.signal.resample_poly` (a fixed polyphase filter). Keywords inside sentences get their times
from the synthesizer where it reports them (festival's Word relation) and otherwise from the length
of the sentence synthesised up to the keyword (espeak-ng, flite): an estimate a few tens of ms late,
well inside the scoring tolerance.

Torch-free (numpy, scipy, subprocess).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import data as D

log = logging.getLogger(__name__)

SR = D.SR
FAMILIES = ("espeak", "flite", "festival")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_ENGLISH = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
# festival voices of other languages (Debian main): voice -> (language, speaker, Debian package)
FESTIVAL_OTHER = {"lp_diphone": ("it", "lp", "festvox-italp16k"), "pc_diphone": ("it", "pc", "festvox-itapc16k"),
                  "czech_dita": ("cs", "dita", "festvox-czech-dita"), "czech_krb": ("cs", "krb", "festvox-czech-krb"),
                  "czech_machac": ("cs", "machac", "festvox-czech-machac"),
                  "czech_ph": ("cs", "ph", "festvox-czech-ph"), "suo_fi_lj_diphone": ("fi", "lj", "festvox-suopuhe-lj"),
                  "hy_fi_mv_diphone": ("fi", "mv", "festvox-suopuhe-mv"),
                  "msu_ru_nsh_clunits": ("ru", "nsh", "festvox-ru"), "upc_ca_ona_hts": ("ca", "ona", "festvox-ca-ona-hts")}
FESTIVAL_VOICES = FESTIVAL_ENGLISH + tuple(FESTIVAL_OTHER)
SPEAKER = {"flite:kal": "kal", "flite:kal16": "kal", "flite:awb": "awb", "flite:rms": "rms", "flite:slt": "slt",
           "festival:kal_diphone": "kal", "festival:ked_diphone": "ked", "festival:cmu_us_slt_arctic_hts": "slt",
           **{f"festival:{v}": spk for v, (_, spk, _) in FESTIVAL_OTHER.items()}}
FESTIVAL_VOICE_DIRS = Path("/usr/share/festival/voices")

# Words that sound like a keyword and must not fire (homophones such as know/no, write/right are a
# documented limit and kept out of the negatives: a spotter cannot tell them apart from sound).
NEAR_MISSES = ("yet", "yesterday", "dawn", "top", "going", "often", "upper", "lift", "light", "town", "gone",
               "note", "step", "stock", "goat", "nose", "leftist", "lefty", "bright", "ride", "drop",
               "cup", "under", "yellow", "downtown", "offer", "onto", "goal", "ongoing", "stopper")
HOMOPHONES = {"no": ("know",), "right": ("write", "rite"), "yes": (), "up": (), "down": (), "left": (),
              "on": (), "off": (), "stop": (), "go": ()}
# Common words for keyword-free sentences (no keyword, no homophone of one).
NEG_WORDS = tuple("""the a an and but or so because if when while then than that this these those
there here it its is are was were be been being have has had do does did will would can could should may
might must shall we you they he she i me him her us them my your our their what which who whom whose why
how where all some many much more most few little other another such only own same very just also
too again once about above across after against along among around at before behind below beneath beside
between beyond by during for from in inside into near of outside over past since through to toward
towards with within without kitchen window table chair door house garden street city river mountain
water coffee tea bread cheese apple orange lemon sugar milk dinner lunch breakfast morning evening night
today tomorrow yesterday week month year time day hour minute moment second people person man woman child
family friend teacher doctor robot machine computer phone music radio picture story book letter paper
box bag bottle glass plate spoon knife fork shirt coat shoe hat car bus train plane boat bicycle road
bridge station airport hospital school office market shop bank library museum park forest field farm
animal bird cat dog horse fish cow sheep chicken green blue red yellow white black brown purple small
large big tall short long wide narrow heavy light warm cold hot cool quiet loud happy sad tired busy
ready early late easy hard simple nice good bad better best new old young fresh clean dirty full empty
bring carry take make bake cook eat drink read write sing play walk run swim drive ride fly sleep wake
think know remember forget believe understand learn teach tell ask answer call send find keep hold give
open close begin finish wait watch look see hear listen feel smell taste buy sell pay spend save build
paint draw clean wash fix move turn pull push put set sit stand lie rest start travel visit return""".split())
NEG_WORDS = tuple(w for w in NEG_WORDS if w not in D.KEYWORDS and w not in ("know", "write", "ride", "light",
                                                                              "set", "wait"))


def has_keyword(text: str) -> bool:
    """Whether a text holds a keyword or a homophone of one as a word (such texts are no negatives)."""
    bad = set(D.KEYWORDS) | {h for hs in HOMOPHONES.values() for h in hs}
    return any(w in bad for w in text.lower().split())


class SynthesisError(D.SynthesisError):
    """A synthesizer is missing or failed."""


def language_of(voice: str) -> str:
    """'en' for the English voices, else the festival voice's language code (FESTIVAL_OTHER)."""
    fam, name = voice.split(":", 1) if ":" in voice else ("", voice)
    return FESTIVAL_OTHER[name][0] if fam == "festival" and name in FESTIVAL_OTHER else "en"


def festival_voice_installed(name: str) -> bool:
    """Whether festival's voice `name` (e.g. 'lp_diphone') is installed (a folder under FESTIVAL_VOICE_DIRS)."""
    return shutil.which("festival") is not None and any(FESTIVAL_VOICE_DIRS.glob(f"*/{name}"))


_SPOKEN: dict | None = None


def spoken_form(voice: str, keyword: str) -> str | None:
    """The text a voice reads to say `keyword`: the keyword itself for English voices; for a festival voice
    of another language its verified respelling (respell.json, made by `python -m essm_stream.kws.respell`),
    or None when no spelling passed the check (the voice never says that keyword)."""
    global _SPOKEN
    if language_of(voice) == "en":
        return keyword
    if _SPOKEN is None:
        import json

        p = Path(__file__).with_name("respell.json")
        t = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {"voices": {}}
        _SPOKEN = {v: {k: r["spelling"] for k, r in kws.items() if r.get("pass")} for v, kws in t["voices"].items()}
    return _SPOKEN.get(voice.split(":", 1)[1], {}).get(keyword)


def keywords_of(voice: str) -> tuple[str, ...]:
    """The keywords a voice says (all ten, except where a festival voice of another language has no spelling)."""
    return tuple(k for k in D.KEYWORDS if spoken_form(voice, k))


def available() -> dict[str, bool]:
    """Which families can synthesise here."""
    return {"espeak": shutil.which("espeak-ng") is not None, "flite": shutil.which("flite") is not None,
            "festival": shutil.which("festival") is not None}


def family_of(voice: str) -> str:
    return voice.split(":", 1)[0]


def speaker_of(voice: str) -> str:
    """The person behind a voice (espeak-ng's variants are formant models of no recorded person)."""
    return SPEAKER.get(voice, voice)


def espeak_voices(test_only: bool | None = None) -> tuple[str, ...]:
    """espeak:<variant> names (accents are drawn per utterance); test_only selects data.split_voices()'s half."""
    sv = D.split_voices()
    v = D.VARIANTS if test_only is None else (sv["test"] if test_only else sv["train"])
    return tuple(f"espeak:{x}" for x in v)


def family_voices(family: str) -> tuple[str, ...]:
    if family == "espeak":
        return espeak_voices()
    if family == "flite":
        return tuple(f"flite:{v}" for v in FLITE_VOICES)
    if family == "festival":
        return tuple(f"festival:{v}" for v in FESTIVAL_VOICES)
    raise D.ConfigError(f"unknown synthesizer family {family!r}; known: {FAMILIES}")


HOLD_OUT_PREFIX = "ho-"


def all_voices() -> tuple[str, ...]:
    return tuple(v for f in FAMILIES for v in family_voices(f))


def _token(voice: str) -> str:
    """'<family>.<speaker>' of a voice: the unit a speaker fold holds out (file-name safe, no '_')."""
    return f"{family_of(voice)}.{speaker_of(voice).split(':')[-1]}"


VAL_SEP = "~"


def _tokens(spec: str, body: str) -> list[str]:
    parts = [x.strip() for x in body.replace("+", ",").split(",") if x.strip()]
    if not parts:
        raise D.ConfigError(f"empty fold {spec!r}: give a family {FAMILIES} or held-out voices")
    known = {_token(v): v for v in all_voices()}
    tokens = set()
    for x in parts:
        if ":" in x:
            if x not in all_voices():
                raise D.ConfigError(f"unknown voice {x!r} in fold {spec!r} (family:voice, e.g. festival:ked_diphone)")
            tokens.add(_token(x))
        elif x in known:
            tokens.add(x)
        else:
            raise D.ConfigError(f"unknown held-out voice {x!r} in fold {spec!r}; known: {sorted(known)}")
    return sorted(tokens)


def fold_name(spec: str) -> str:
    """The canonical name of a fold: a family name ('festival'), or held-out voices given as a
    comma-separated list of voices ('festival:ked_diphone,festival:cmu_us_slt_arctic_hts') or of
    '<family>.<speaker>' tokens ('festival.ked,festival.slt'), or such a name already
    ('ho-festival.ked+festival.slt'). Held-out voices may be followed by '~' and recorded voices
    that validate (thresholds, checkpoint) beside espeak-ng's test variants and never train:
    'festival:ked_diphone,festival:cmu_us_slt_arctic_hts~festival:lp_diphone' is the fold
    'ho-festival.ked+festival.slt~festival.lp'. Raises ConfigError naming what is unknown."""
    spec = str(spec).strip()
    if spec in FAMILIES:
        return spec
    body = spec[len(HOLD_OUT_PREFIX):] if spec.startswith(HOLD_OUT_PREFIX) else spec
    test_part, _, val_part = body.partition(VAL_SEP)
    name = HOLD_OUT_PREFIX + "+".join(_tokens(spec, test_part))
    if VAL_SEP in body:
        val = _tokens(spec, val_part)
        by_tok = {_token(v): v for v in all_voices()}
        test_spk = {speaker_of(v) for v in all_voices() if _token(v) in set(_tokens(spec, test_part))}
        bad = [t for t in val if family_of(by_tok[t]) == "espeak" or speaker_of(by_tok[t]) in test_spk]
        if bad:
            raise D.ConfigError(f"validation voices {bad} of fold {spec!r} must be recorded voices (not espeak-ng) "
                                "and no held-out speaker")
        name += VAL_SEP + "+".join(val)
    return name


def fold(test_family: str) -> dict[str, tuple[str, ...]]:
    """A speaker-disjoint split: {'train', 'val', 'test', 'excluded'} voices.

    test_family is a family (leave-one-family-out) or a held-out-voices fold (see fold_name: e.g.
    'ho-festival.ked+festival.slt' holds out festival's ked_diphone and slt HTS voices). Either way
    every voice of a test *speaker* is kept out of training and validation ('excluded' lists those
    that are not themselves test voices, e.g. flite's slt when festival's slt is held out).
    Validation (thresholds, checkpoint choice) is never a test voice: espeak-ng's seeded test
    variants, plus flite rms for the festival family fold (a speaker fold trains on every recorded
    voice it does not hold out, so its validation is espeak-ng's test variants only).
    """
    name = fold_name(test_family)
    val_speakers = set()
    if name in FAMILIES:
        test = family_voices(name)
    else:
        test_part, _, val_part = name[len(HOLD_OUT_PREFIX):].partition(VAL_SEP)
        toks = set(test_part.split("+"))
        test = tuple(v for v in all_voices() if _token(v) in toks)
        vt = set(val_part.split("+")) if val_part else set()
        val_speakers = {speaker_of(v) for v in all_voices() if _token(v) in vt}
    test_speakers = {speaker_of(v) for v in test}
    excluded = tuple(v for v in all_voices() if v not in test and speaker_of(v) in test_speakers)
    others = [f for f in FAMILIES if f != name]
    pool = [v for f in others for v in family_voices(f) if speaker_of(v) not in test_speakers]
    espeak_test = set(espeak_voices(test_only=True))
    if name == "espeak":
        val = ("flite:rms",)
    elif name in FAMILIES:
        val = espeak_voices(test_only=True) + tuple(v for v in ("flite:rms",) if v in pool and name != "flite")
    else:
        val = espeak_voices(test_only=True) + tuple(v for v in pool if speaker_of(v) in val_speakers)
    val_set = set(val)
    train = tuple(v for v in pool if v not in val_set and speaker_of(v) not in val_speakers
                  and not (family_of(v) == "espeak" and v in espeak_test))
    return {"train": train, "val": tuple(v for v in val if v in pool), "test": test, "excluded": excluded}


def fold_seed(name: str) -> int:
    """A fixed seed offset per fold (the families' historical ones; a speaker fold's from its name)."""
    import zlib

    name = fold_name(name)
    return {"espeak": 0, "flite": 100, "festival": 200}.get(name, 1000 + zlib.crc32(name.encode()) % 100000)


# ----------------------------------------------------------------------------- reading WAVs
def read_wav_bytes(b: bytes) -> np.ndarray:
    """int16 mono RIFF bytes (any rate; espeak-ng's streamed header too) -> float64 at 16 kHz."""
    from scipy.signal import resample_poly

    if len(b) < 46 or b[:4] != b"RIFF":
        raise SynthesisError("synthesizer output is not a RIFF WAV")
    # walk the chunks to 'data' (festival writes a plain 44-byte header, flite too; be general)
    pos, sr, data = 12, None, None
    while pos + 8 <= len(b):
        cid, size = b[pos:pos + 4], int.from_bytes(b[pos + 4:pos + 8], "little")
        if cid == b"fmt ":
            sr = int.from_bytes(b[pos + 12:pos + 16], "little")
        if cid == b"data":
            end = len(b) if size in (0, 0xFFFFFFFF) or pos + 8 + size > len(b) else pos + 8 + size
            data = b[pos + 8:end]
            break
        pos += 8 + size + (size & 1)
    if sr is None or data is None:
        raise SynthesisError("WAV without fmt/data chunk")
    x = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64) / 32768.0
    if sr != SR:
        g = np.gcd(SR, sr)
        x = resample_poly(x, SR // g, sr // g)
    return x


# ----------------------------------------------------------------------------- engines
def _espeak(text: str, variant: str, accent: str, speed: int, pitch: int) -> np.ndarray:
    r = subprocess.run(["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch), "--stdout",
                        text], capture_output=True, timeout=30)
    if r.returncode != 0:
        raise SynthesisError(f"espeak-ng failed: {r.stderr.decode()[:200]}")
    return read_wav_bytes(r.stdout)


def _flite(text: str, voice: str, stretch: float, f0: float | None) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}"]
        if f0 is not None:
            cmd += ["--setf", f"int_f0_target_mean={f0:.1f}"]
        r = subprocess.run(cmd + ["-t", text, "-o", f.name], capture_output=True, timeout=30)
        if r.returncode != 0:
            raise SynthesisError(f"flite failed for {voice}: {r.stderr.decode()[:200]}")
        return read_wav_bytes(Path(f.name).read_bytes())


def festival_batch(voice: str, items: list[tuple[str, float]], words: bool = False):
    """Synthesise many texts with one festival process: [(text, duration_stretch)] -> list of
    (audio float64 16 kHz, [(word, end_s)] or None)."""
    with tempfile.TemporaryDirectory() as td:
        lines = [f"(voice_{voice})"]
        for i, (text, stretch) in enumerate(items):
            t = "".join(c for c in text.lower() if c.isalpha() or c in " '")
            lines.append(f"(Parameter.set 'Duration_Stretch {stretch:.3f})")
            lines.append(f'(set! u (Utterance Text "{t}"))(utt.synth u)(utt.save.wave u "{td}/{i}.wav" \'riff)')
            if words:
                lines.append(f'(format t "U {i}\\n")(mapcar (lambda (w) (format t "W %s %f\\n" (item.name w) '
                             f'(item.feat w "word_end"))) (utt.relation.items u \'Word))')
        scm = Path(td) / "job.scm"
        scm.write_text("\n".join(lines) + "\n", encoding="utf-8")      # respellings may be Cyrillic
        r = subprocess.run(["festival", "-b", str(scm)], capture_output=True, timeout=60 + 5 * len(items))
        if r.returncode != 0:
            raise SynthesisError(f"festival failed for {voice}: {r.stderr.decode()[:300]}")
        wt: dict[int, list] = {}
        cur = None
        for line in r.stdout.decode(errors="replace").splitlines():
            if line.startswith("U "):
                cur = int(line[2:])
                wt[cur] = []
            elif line.startswith("W ") and cur is not None:
                parts = line.split()
                if len(parts) != 3:
                    continue
                _, w, e = parts
                wt[cur].append((w, float(e)))
        out = []
        for i in range(len(items)):
            p = Path(td) / f"{i}.wav"
            out.append((read_wav_bytes(p.read_bytes()) if p.is_file() else np.zeros(0), wt.get(i)))
        return out


def draw_prosody(voice: str, rng: np.random.Generator) -> dict:
    """Random speaking rate / pitch for one utterance of an espeak-ng or flite voice."""
    fam, name = voice.split(":", 1)
    if fam == "espeak":
        return {"accent": D.ACCENTS[int(rng.integers(len(D.ACCENTS)))], "speed": int(rng.integers(120, 201)),
                "pitch": int(rng.integers(25, 76))}
    f0 = None if rng.random() < 0.5 else float(rng.uniform(150, 210) if name == "slt" else rng.uniform(85, 130))
    return {"stretch": float(rng.uniform(0.8, 1.3)), "f0": f0}


def synth_one(voice: str, text: str, prosody: dict) -> np.ndarray:
    """One utterance by an espeak-ng or flite voice (festival: festival_batch)."""
    fam, name = voice.split(":", 1)
    if fam == "espeak":
        return _espeak(text, name, prosody["accent"], prosody["speed"], prosody["pitch"])
    if fam == "flite":
        return _flite(text, name, prosody["stretch"], prosody["f0"])
    raise SynthesisError(f"synth_one cannot run {voice!r}")


def lead_trim(x: np.ndarray, rel_db: float = -40.0) -> tuple[np.ndarray, int]:
    """(trimmed audio, samples cut at the start) like data.trim."""
    a = np.abs(x)
    if len(a) == 0 or a.max() <= 0:
        return x[:0], 0
    idx = np.nonzero(a > a.max() * 10 ** (rel_db / 20))[0]
    pad = int(0.02 * SR)
    s = max(0, idx[0] - pad)
    return x[s: idx[-1] + pad + 1], s


# ----------------------------------------------------------------------------- text plans
def sentence_with_keyword(kw: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """(prefix, keyword, suffix): the keyword at the start, middle or end of a sentence of filler words."""
    pos = int(rng.integers(3))
    n1 = 0 if pos == 0 else int(rng.integers(2, 6))
    n2 = 0 if pos == 2 else int(rng.integers(2, 6))
    w = lambda n: " ".join(NEG_WORDS[i] for i in rng.integers(len(NEG_WORDS), size=n))  # noqa: E731
    return w(n1), kw, w(n2)


def negative_sentence(rng: np.random.Generator, near_p: float = 0.25) -> str:
    n = int(rng.integers(4, 12))
    words = [NEG_WORDS[i] for i in rng.integers(len(NEG_WORDS), size=n)]
    if rng.random() < near_p:
        words.insert(int(rng.integers(len(words) + 1)), NEAR_MISSES[int(rng.integers(len(NEAR_MISSES)))])
    return " ".join(words)


def plan(voice: str, n_iso: int, n_sent: int, n_near: int, n_neg: int, seed) -> list[dict]:
    """The texts one voice speaks: isolated keywords, keywords in sentences, near-misses, keyword-free sentences."""
    rng = np.random.default_rng(seed)
    jobs = []
    for kw in D.KEYWORDS:
        said = spoken_form(voice, kw)       # a respelling for festival's voices of other languages, None: never said
        extra = {} if said == kw else {"spoken": said}
        if said is not None:
            jobs += [{"kind": "iso", "label": kw, "text": said, **extra} for _ in range(n_iso)]
        for _ in range(n_sent):
            p, k, s = sentence_with_keyword(kw, rng)         # drawn either way: the other keywords' texts stay put
            if said is not None:
                jobs.append({"kind": "sent", "label": kw, "prefix": p, "text": " ".join(x for x in (p, said, s) if x),
                             **extra})
    for _ in range(n_near):
        jobs.append({"kind": "near", "label": "", "text": NEAR_MISSES[int(rng.integers(len(NEAR_MISSES)))]})
    for _ in range(n_neg):
        jobs.append({"kind": "neg", "label": "", "text": negative_sentence(rng)})
    return jobs


def render_voice(voice: str, jobs: list[dict], seed) -> list[dict]:
    """Synthesise a voice's jobs: each gets 'audio' (float32 16 kHz, trimmed) and, for keywords,
    'kw_start'/'kw_end' (seconds in the trimmed audio)."""
    rng = np.random.default_rng(seed)
    fam, name = voice.split(":", 1)
    out = []
    if fam == "festival":
        items = [(j["text"], float(rng.uniform(0.8, 1.3))) for j in jobs]
        res = []
        for i in range(0, len(items), 200):
            res += festival_batch(name, items[i:i + 200], words=True)
        for j, (a, words) in zip(jobs, res):
            a, cut = lead_trim(a)
            if len(a) < 800:
                continue
            j = dict(j, audio=a.astype(np.float32), voice=voice)
            if j["label"]:
                ends = [0.0] + [e for _, e in (words or [])]
                names = [w for w, _ in (words or [])]
                try:
                    k = names.index(j.get("spoken", j["label"]))
                    j["kw_start"], j["kw_end"] = max(0.0, ends[k] - cut / SR), ends[k + 1] - cut / SR
                except ValueError:
                    j["kw_start"], j["kw_end"] = 0.0, len(a) / SR
            out.append(j)
        return out
    for j in jobs:
        try:
            pr = draw_prosody(voice, rng)
            a, cut = lead_trim(synth_one(voice, j["text"], pr))
            if len(a) < 800:
                continue
            j = dict(j, audio=a.astype(np.float32), voice=voice)
            if j["kind"] == "iso":
                j["kw_start"], j["kw_end"] = 0.0, len(a) / SR
            elif j["kind"] == "sent":
                # the sentence up to the keyword and up to its start, same voice and prosody
                up_to = " ".join(x for x in (j["prefix"], j["label"]) if x)
                e = len(lead_trim(synth_one(voice, up_to, pr))[0]) / SR
                s = len(lead_trim(synth_one(voice, j["prefix"], pr))[0]) / SR if j["prefix"] else 0.0
                j["kw_start"], j["kw_end"] = min(s, len(a) / SR), min(e, len(a) / SR)
            out.append(j)
        except (SynthesisError, subprocess.TimeoutExpired) as ex:   # one bad text does not sink a bank
            log.warning("%s: %s", voice, ex)
    return out


def save_bank(path, items: list[dict]) -> None:
    """Utterances of one voice as one .npz (audio concatenated, metadata as JSON)."""
    import json

    lens = np.array([len(j["audio"]) for j in items], dtype=np.int64)
    meta = [{k: v for k, v in j.items() if k != "audio"} for j in items]
    tmp = Path(path).with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, audio=np.concatenate([j["audio"] for j in items]) if items else np.zeros(0, np.float32),
             lengths=lens, meta=np.array(json.dumps(meta)))
    tmp.replace(path)


def load_bank(path) -> list[dict]:
    import json

    z = np.load(path, allow_pickle=False)
    audio, lens = z["audio"], z["lengths"]
    ends = np.cumsum(lens)
    meta = json.loads(str(z["meta"]))
    # banks written before NEAR_MISSES lost "go on", "yes sir", "left over": a negative holding a
    # keyword is dropped here, so it is never scored (or trained) as keyword-free speech
    return [dict(m, audio=audio[e - n:e]) for m, n, e in zip(meta, lens, ends)
            if m.get("label") or not has_keyword(m["text"])]
