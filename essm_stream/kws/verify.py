"""A second-stage keyword verifier: pocketsphinx's real-speech acoustic model asked whether the keyword a
first-stage detection names is in the audio around it (issue 9, torch-free).

    v = make_verifier({"kind": "pocketsphinx", "threshold": -0.16})
    a, b = v.window_bounds(t_detect, sr=16000)       # samples of the window around a detection at t_detect
    ok = v.accept(pcm[a:b], "left")                  # True / False
    s = v.score(pcm[a:b], "left")                    # the score the threshold is applied to

The score: the window is peak-normalised and decoded by a keyphrase search for that one word (pocketsphinx 5
`Decoder(keyphrase=word, kws_threshold=FLOOR)`, its bundled en-us model, batch CMN over the window); the score
is the natural log of the best `Segment.prob` of that word (0 = certain; about -0.1 for a clear keyword, -0.2
and below for a near-miss; SCORE_NONE when no segment of it ends in the window). The keyphrase search compares
the word's path with pocketsphinx's phone loop, so other speech in the window (a sentence around the keyword)
is allowed. Decisions: accept iff score >= threshold.

The window (WINDOW_PRE_S before the detection time to WINDOW_POST_S after it): the spotter is trained to fire
in the keyword's end window, -0.08 ... +0.8 s around the keyword's end (streamtrain.END_WINDOW), and the
longest keyword lasts about 0.8 s, so the whole keyword lies in [t - 1.6 s, t + 0.08 s]. A product cascade
can verify only after the window's end: WINDOW_POST_S = 0.1 s is the latency the verifier adds (plus its CPU).

Config (check_verifier_config; kws-eval --verify and a program's frontend "verifier" entry if the product wiring in
docs/run-scripts/2026-11-30-verify/wiring_not_applied.patch is ever applied; it failed its rule, docs/KWS.md):
    {"kind": "pocketsphinx", "threshold": float in [-5, 0], "pre_s": (0, 3], "post_s": [0, 1]}
"""
from __future__ import annotations

import logging
import math
import numbers

import numpy as np

from ..errors import ConfigError
from .data import KEYWORDS

log = logging.getLogger(__name__)

KINDS = ("pocketsphinx",)
WINDOW_PRE_S = 1.6
WINDOW_POST_S = 0.1
MAX_PRE_S = 3.0                 # KeywordSpotter keeps max pre_s + post_s of audio (about 2 s by default)
MAX_POST_S = 1.0
FLOOR = 1e-50                   # the keyphrase search's own threshold: permissive, the score decides
SCORE_NONE = -10.0              # no segment of the word in the window (below any useful threshold)
THRESHOLD_RANGE = (-5.0, 0.0)
# the verifier thresholds kws-eval --verify tries (None = no verification: the plain first stage)
VERIFY_THRESHOLDS = (None, -0.22, -0.21, -0.20, -0.19, -0.18, -0.17, -0.16, -0.15, -0.14, -0.13, -0.12)
CONFIG_KEYS = ("kind", "threshold", "pre_s", "post_s")


def parse_thresholds(text: str) -> list:
    """'none,-0.2,-0.15' -> [None, -0.2, -0.15]; ValueError naming a bad entry (not a number or 'none', out of
    THRESHOLD_RANGE, or an empty list)."""
    out = []
    for x in str(text).split(","):
        x = x.strip()
        if not x:
            continue
        if x.lower() == "none":
            out.append(None)
            continue
        try:
            v = float(x)
        except ValueError:
            raise ValueError(f"{x!r} is neither a number nor 'none'") from None
        if not (math.isfinite(v) and THRESHOLD_RANGE[0] <= v <= THRESHOLD_RANGE[1]):
            raise ValueError(f"{x!r} is outside [{THRESHOLD_RANGE[0]:g}, {THRESHOLD_RANGE[1]:g}]")
        out.append(v)
    if not out:
        raise ValueError(f"no thresholds in {text!r}")
    return out


class VerifierUnavailable(ConfigError, ImportError):
    """The verifier a program or command names needs a package that is not installed."""


def _import_decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError as e:                      # an optional dependency of the verifier only
        raise VerifierUnavailable("the pocketsphinx verifier needs the `pocketsphinx` package (pip install "
                                  "pocketsphinx==5.1.1; it ships its en-us model): " + str(e)) from e
    return Decoder


def check_verifier_config(cfg) -> dict:
    """A verifier entry of a program's frontend, checked and completed with defaults; ConfigError names what
    is wrong (unknown kind or key, a non-number, a value out of range)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"verifier config must be a dict like {{'kind': 'pocketsphinx', 'threshold': -0.16}}, "
                          f"got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"verifier config: unknown keys {unknown} (known: {list(CONFIG_KEYS)})")
    kind = cfg.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"verifier kind must be one of {KINDS}, got {kind!r}")
    out = {"kind": kind}
    for key, default, lo, hi in (("threshold", None, *THRESHOLD_RANGE), ("pre_s", WINDOW_PRE_S, 0.0, MAX_PRE_S),
                                 ("post_s", WINDOW_POST_S, 0.0, MAX_POST_S)):
        v = cfg.get(key, default)
        if v is None:
            raise ConfigError(f"verifier config: {key!r} is required (a number in [{lo:g}, {hi:g}])")
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or not lo <= v <= hi:
            raise ConfigError(f"verifier config: {key} must be a finite number in [{lo:g}, {hi:g}], got {v!r}")
        if key == "pre_s" and v <= 0:
            raise ConfigError(f"verifier config: pre_s must be > 0, got {v!r}")
        out[key] = float(v)
    return out


def window_bounds(t_s: float, pre_s: float = WINDOW_PRE_S, post_s: float = WINDOW_POST_S, sr: int = 16000,
                  n: int | None = None) -> tuple[int, int]:
    """Sample bounds [a, b) of the window [t_s - pre_s, t_s + post_s] around a detection at t_s seconds
    (clipped to [0, n] when n, the stream's length in samples, is given)."""
    a, b = max(0, int(round((t_s - pre_s) * sr))), max(0, int(round((t_s + post_s) * sr)))
    if n is not None:
        a, b = min(a, n), min(b, n)
    return a, b


class PocketsphinxVerifier:
    """accept(window, keyword) / score(window, keyword); one keyphrase decoder per keyword, made on first use.
    pocketsphinx updates its cepstral-mean estimate after each utterance, so a score depends on what that decoder
    verified before by a few 1e-4 (the same window scored first and later: -0.14669 vs -0.14689), a fiftieth of the
    threshold grid's step (VERIFY_THRESHOLDS); a verdict can flip only within that distance of the threshold."""

    kind = "pocketsphinx"

    def __init__(self, threshold: float | None = None, pre_s: float = WINDOW_PRE_S, post_s: float = WINDOW_POST_S,
                 keywords=KEYWORDS):
        cfg = check_verifier_config({"kind": "pocketsphinx", "threshold": -0.2 if threshold is None else threshold,
                                     "pre_s": pre_s, "post_s": post_s})
        self.threshold = None if threshold is None else cfg["threshold"]
        self.pre_s, self.post_s = cfg["pre_s"], cfg["post_s"]
        self.keywords = tuple(keywords)
        self._Decoder = _import_decoder()
        self._dec = {}
        self.calls = 0
        self.cpu_s = 0.0

    def config(self) -> dict:
        return {"kind": self.kind, "threshold": self.threshold, "pre_s": self.pre_s, "post_s": self.post_s}

    def window_bounds(self, t_s: float, sr: int = 16000, n: int | None = None) -> tuple[int, int]:
        return window_bounds(t_s, self.pre_s, self.post_s, sr, n)

    def _decoder(self, keyword: str):
        if keyword not in self.keywords:
            raise ConfigError(f"verifier: {keyword!r} is not one of the keywords {self.keywords}")
        if keyword not in self._dec:
            self._dec[keyword] = self._Decoder(keyphrase=keyword, kws_threshold=FLOOR, loglevel="FATAL")
        return self._dec[keyword]

    def score(self, audio, keyword: str) -> float:
        """ln of the best keyphrase-segment prob of `keyword` in the window (16 kHz mono, int16 or float at any
        level); SCORE_NONE for a silent or too short window or no segment of the word."""
        import time
        x = np.asarray(audio)
        if x.ndim != 1:
            raise ConfigError(f"verifier: the window must be 1-D mono audio, got shape {x.shape}")
        x = x.astype(np.float64)
        dec = self._decoder(keyword)
        peak = np.abs(x).max() if len(x) else 0.0
        if len(x) < 1600 or not np.isfinite(peak) or peak <= 0:
            return SCORE_NONE
        t0 = time.thread_time()
        pcm = np.round(x * (0.5 * 32767 / peak)).astype("<i2")
        dec.start_utt()
        dec.process_raw(pcm.tobytes(), False, True)
        dec.end_utt()
        probs = [s.prob for s in (dec.seg() or []) if s.word.strip() == keyword]
        self.calls += 1
        self.cpu_s += time.thread_time() - t0
        best = max(probs, default=0.0)
        return max(SCORE_NONE, float(np.log(best))) if best > 0 else SCORE_NONE

    def accept(self, audio, keyword: str, threshold: float | None = None) -> bool:
        th = self.threshold if threshold is None else threshold
        if th is None:
            raise ConfigError("verifier: no threshold (give one to the constructor or to accept)")
        return self.score(audio, keyword) >= th


def make_verifier(cfg) -> PocketsphinxVerifier:
    """A verifier from a (checked) config dict."""
    c = check_verifier_config(cfg)
    return PocketsphinxVerifier(c["threshold"], c["pre_s"], c["post_s"])
