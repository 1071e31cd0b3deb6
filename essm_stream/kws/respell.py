"""Keywords that festival's voices of other languages actually say (issue 9: speakers beyond the voices).

An Italian, Czech, Finnish, Russian or Catalan festival voice reads English text through its own
letter-to-sound rules: "right" may come out as [rixt], "go" as [go] with a foreign vowel, or as a
different word altogether. A keyword a voice cannot say must not be trained as that keyword. So per
voice and keyword a few respellings are tried (`CANDIDATES`, per language: spellings that make the
language's rules produce the English sounds, the English spelling first) and checked by an acoustic
model trained on real English speech: pocketsphinx 5.1.1's en-us model, decoding each rendered word
with a JSGF grammar that allows exactly one of the ten keywords: a forced choice, chance 10%. (A
grammar with the near-miss words too was tried first and rejected: it failed the native English
voices themselves, kal and ked "down" -> "dawn" 10 of 10, slt "right" -> "bright", "no" -> "yellow".)

    python -m essm_stream.kws.respell [--out essm_stream/kws/respell.json] [--voices lp_diphone,...]

1. choice: every candidate rendered at duration stretches `CHOICE_STRETCH`; the one recognised as the
   intended keyword most often is taken (ties: the earlier candidate);
2. check: the chosen spelling rendered again at `CHECK_N` fresh stretches (uniform 0.8-1.3, as the
   banks draw them); it passes if recognised as the intended keyword in >= PASS_RATE of them.
A failed (voice, keyword) pair is never rendered as that keyword (voices.spoken_form returns None).
The English voices (kal, ked, slt HTS) are checked with the plain spelling as a reference (reporting
only). Torch-free; needs festival, the voices and pocketsphinx.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from . import data as D
from . import voices as V

log = logging.getLogger(__name__)

CHOICE_STRETCH = (0.85, 1.0, 1.2)
CHECK_N = 10
PASS_RATE = 0.6
CHECK_SEED = 20261130
PAD_S = 0.3

# per language, per keyword: spellings to try (the English spelling first)
_LATIN = {"yes": ("yes", "ies", "jes", "iess"), "no": ("no", "nou", "nau", "noo"), "up": ("up", "ap", "app", "ep"),
          "down": ("down", "daun", "daon", "dau"), "left": ("left", "lefft", "lef"),
          "right": ("right", "rait", "rajt", "raitt"), "on": ("on", "onn", "an", "ann"),
          "off": ("off", "of", "aff", "oof"), "stop": ("stop", "stopp", "stap"), "go": ("go", "gou", "gow", "gau")}
CANDIDATES = {
    "it": _LATIN,
    "cs": dict(_LATIN, yes=("yes", "jes", "jess", "ies")),
    "fi": dict(_LATIN, yes=("yes", "jes", "jess", "ies"), down=("down", "daun", "taun", "daon")),
    "ca": _LATIN,
    "ru": {"yes": ("yes", "йес", "йэс", "ес"), "no": ("no", "ноу", "нау", "но"), "up": ("up", "ап", "эп", "апп"),
           "down": ("down", "даун", "даон", "дан"), "left": ("left", "лефт", "лэфт"),
           "right": ("right", "райт", "раит", "рат"), "on": ("on", "он", "ан", "онн"),
           "off": ("off", "оф", "офф", "аф"), "stop": ("stop", "стоп", "стап"), "go": ("go", "гоу", "гау", "гоо")},
}


def grammar_words() -> tuple[str, ...]:
    return tuple(D.KEYWORDS)


class ForcedChoice:
    """pocketsphinx (en-us acoustic model) restricted to one word of `words` per utterance."""

    def __init__(self, words=None):
        from pocketsphinx import Decoder

        self.words = tuple(words or grammar_words())
        g = "#JSGF V1.0;\ngrammar kw;\npublic <kw> = " + " | ".join(self.words) + " ;\n"
        with tempfile.TemporaryDirectory() as td:
            path = Path(td) / "kw.gram"
            path.write_text(g)
            self.dec = Decoder(jsgf=str(path), loglevel="FATAL")

    def __call__(self, audio16k: np.ndarray) -> str | None:
        """The chosen word for one utterance (float audio at 16 kHz, any level), None when no path ends."""
        x = np.asarray(audio16k, dtype=np.float64)
        x = x * (0.5 / (np.abs(x).max() + 1e-12))
        pad = np.zeros(int(PAD_S * D.SR))
        pcm = np.clip(np.round(np.concatenate([pad, x, pad]) * 32767), -32768, 32767).astype("<i2")
        self.dec.start_utt()
        self.dec.process_raw(pcm.tobytes(), False, True)
        self.dec.end_utt()
        h = self.dec.hyp()
        return h.hypstr.strip() if h and h.hypstr.strip() else None


def _recognise(fc: ForcedChoice, voice: str, items: list[tuple[str, float]]) -> list[str | None]:
    out = V.festival_batch(voice, items)
    return [fc(a) if len(a) > 400 else None for a, _ in out]


def check_voice(voice: str, fc: ForcedChoice, keywords=D.KEYWORDS) -> dict:
    """{keyword: {spelling, choice: {cand: hits of len(CHOICE_STRETCH)}, check: [recognised...], rate, pass}}."""
    lang = V.FESTIVAL_OTHER[voice][0] if voice in V.FESTIVAL_OTHER else "en"
    rng = np.random.default_rng([CHECK_SEED, sum(map(ord, voice))])
    res = {}
    for kw in keywords:
        cands = CANDIDATES[lang][kw] if lang != "en" else (kw,)
        choice = {}
        if len(cands) > 1:
            items = [(c, s) for c in cands for s in CHOICE_STRETCH]
            got = _recognise(fc, voice, items)
            for (c, _), g in zip(items, got):
                choice[c] = choice.get(c, 0) + int(g == kw)
            best = max(cands, key=lambda c: (choice[c], -cands.index(c)))
        else:
            best = cands[0]
        stretches = rng.uniform(0.8, 1.3, CHECK_N)
        got = _recognise(fc, voice, [(best, float(s)) for s in stretches])
        rate = sum(g == kw for g in got) / CHECK_N
        res[kw] = {"spelling": best, "choice": choice, "check": got, "rate": rate, "pass": rate >= PASS_RATE}
        log.info("%s %s: %r %d/%d %s", voice, kw, best, round(rate * CHECK_N), CHECK_N, "pass" if rate >= PASS_RATE
                 else "FAIL")
    return res


def build_table(voices=None, english_reference: bool = True) -> dict:
    voices = list(voices or [v for v in V.FESTIVAL_OTHER if V.festival_voice_installed(v)])
    fc = ForcedChoice()
    table = {"rule": f"pocketsphinx 5.1.1 en-us, JSGF forced choice among the {len(fc.words)} keywords; choice over stretches {list(CHOICE_STRETCH)}, check on {CHECK_N} fresh stretches "
                     f"U(0.8, 1.3), pass if recognised as the keyword in >= {PASS_RATE:.0%}",
             "grammar": list(fc.words), "voices": {}, "reference": {}}
    for v in voices:
        table["voices"][v] = check_voice(v, fc)
    if english_reference:
        for v in V.FESTIVAL_ENGLISH:
            if V.festival_voice_installed(v):
                table["reference"][v] = check_voice(v, fc)
    return table


def summary_md(table: dict) -> str:
    """Per-voice, per-keyword pass rates as a markdown table (spelling, rate; failed pairs struck)."""
    kws = list(D.KEYWORDS)
    lines = ["| voice | " + " | ".join(kws) + " | passed |", "|---" * (len(kws) + 2) + "|"]
    for part in ("voices", "reference"):
        for v, r in table.get(part, {}).items():
            cells = []
            for k in kws:
                c = r.get(k)
                if c is None:
                    cells.append("")
                    continue
                s = f"{c['spelling']} {round(100 * c['rate'])}%"
                cells.append(s if c["pass"] else f"~~{s}~~")
            name = v + (" (English, reference)" if part == "reference" else "")
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(c['pass'] for c in r.values())}/{len(kws)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ..fileio import atomic_write_bytes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("respell.json")))
    ap.add_argument("--voices", default="", help="comma-separated festival voice names (default: every installed "
                    "voice of voices.FESTIVAL_OTHER)")
    ap.add_argument("--md", default="", help="also write the pass-rate table (markdown) here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    vs = [v.strip() for v in a.voices.split(",") if v.strip()] or None
    bad = [v for v in vs or [] if v not in V.FESTIVAL_OTHER]
    if bad:
        ap.error(f"unknown voices {bad}; known: {sorted(V.FESTIVAL_OTHER)}")
    missing = [v for v in vs or [] if not V.festival_voice_installed(v)]
    if missing:
        ap.error(f"festival voices not installed: {missing} (scripts/kws_install_system.sh)")
    table = build_table(vs)
    atomic_write_bytes(a.out, (json.dumps(table, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    if a.md:
        atomic_write_bytes(a.md, (summary_md(table) + "\n").encode("utf-8"))
    print(summary_md(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
