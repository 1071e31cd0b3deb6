"""Stage 1 of the multi-synthesizer data: one utterance bank per voice and purpose, resumable.

    python -m essm_stream.kws.corpus runs/kws2/banks [--workers 2] [--scale 1.0]

writes  <out>/train/<voice>.npz   utterances for training (every voice of every family; a fold picks)
        <out>/eval/<voice>.npz    keywords alone / in sentences for the held-out streams (other texts
                                  and prosody draws than the training bank)
        <out>/neg/<family>_<i>.npz  keyword-free sentences for the false-accept measurement
A bank that exists is skipped, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import logging
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from . import voices as V

log = logging.getLogger(__name__)

# per voice: (isolated per keyword, sentences per keyword, near-miss words, keyword-free sentences)
TRAIN_SIZES = {"espeak": (2, 1, 3, 4), "flite": (12, 8, 40, 60), "festival": (12, 8, 40, 60)}
EVAL_SIZES = {"espeak": (1, 1, 0, 0), "flite": (3, 3, 0, 0), "festival": (5, 5, 0, 0)}
EVAL_ESPEAK_VOICES = 30          # espeak-ng has 81 variants: the held-out streams use 30 of them
NEG_SENTENCES = {"espeak": 1500, "flite": 1500, "festival": 1500}   # ≈ 1 h of keyword-free speech per family
NEG_CHUNK = 250


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def _job(args):
    path, voice, sizes, seed, neg_only = args
    t0 = time.perf_counter()
    if Path(path).is_file():
        return path, 0, 0.0
    if neg_only:
        import numpy as np
        rng = np.random.default_rng(seed)
        jobs = [{"kind": "neg", "label": "", "text": V.negative_sentence(rng, near_p=0.3)} for _ in range(sizes)]
    else:
        jobs = V.plan(voice, *sizes, seed=seed)
    items = V.render_voice(voice, jobs, seed + 1)
    V.save_bank(path, items)
    return path, len(items), time.perf_counter() - t0


def all_jobs(out: Path, scale: float = 1.0) -> list[tuple]:
    jobs = []
    avail = V.available()
    for fam in V.FAMILIES:
        if not avail[fam]:
            log.warning("%s is not installed: its banks are skipped", fam)
            continue
        vs = V.family_voices(fam)
        n_split = len(vs) if fam != "festival" else len(V.FESTIVAL_ENGLISH)    # per-voice shares as before
        if fam == "festival":
            gone = [v for v in vs if not V.festival_voice_installed(v.split(":", 1)[1])]
            if gone:
                log.warning("festival voices not installed, their banks are skipped: %s", gone)
            vs = tuple(v for v in vs if v not in gone)
        tr = tuple(max(0 if i >= 2 else 1, int(round(n * scale))) for i, n in enumerate(TRAIN_SIZES[fam]))
        ev = tuple(max(0 if i >= 2 else 1, int(round(n * scale))) for i, n in enumerate(EVAL_SIZES[fam]))
        for v in vs:
            jobs.append((str(out / "train" / f"{v.replace(':', '_')}.npz"), v, tr, _seed("train", v), False))
        ev_voices = vs if fam != "espeak" else vs[:: max(1, len(vs) // EVAL_ESPEAK_VOICES)][:EVAL_ESPEAK_VOICES]
        for v in ev_voices:
            jobs.append((str(out / "eval" / f"{v.replace(':', '_')}.npz"), v, ev, _seed("eval", v), False))
        n_neg = int(round(NEG_SENTENCES[fam] * scale))
        per_voice = max(1, n_neg // n_split) if fam != "espeak" else None
        if fam == "espeak":                        # one chunk per espeak variant group
            k = 0
            for i in range(0, n_neg, NEG_CHUNK // 5):
                v = vs[k % len(vs)]
                jobs.append((str(out / "neg" / f"espeak_{k:03d}.npz"), v, min(NEG_CHUNK // 5, n_neg - i),
                             _seed("neg", v, k), True))
                k += 1
        else:
            for v in vs:
                for c in range(0, per_voice, NEG_CHUNK):
                    jobs.append((str(out / "neg" / f"{v.replace(':', '_')}_{c // NEG_CHUNK:02d}.npz"), v,
                                 min(NEG_CHUNK, per_voice - c), _seed("neg", v, c), True))
    return jobs


def more_jobs(out: Path, voices, round_: int = 1, eval_sizes=None, neg_sentences: int = NEG_CHUNK) -> list[tuple]:
    """Extra held-out material for some voices (a speaker fold's few test voices need more than their
    family's share): eval/<voice>.more<round>.npz (keywords alone / in sentences, EVAL_SIZES of the
    family by default) and neg/<voice>_m<round>.npz (keyword-free sentences), new texts and prosody
    draws per round. loso reads them with the voice's other banks."""
    jobs = []
    for v in voices:
        fam, stem = V.family_of(v), v.replace(":", "_", 1)
        ev = tuple(eval_sizes) if eval_sizes else EVAL_SIZES[fam]
        jobs.append((str(out / "eval" / f"{stem}.more{round_}.npz"), v, ev, _seed("eval-more", v, round_), False))
        if neg_sentences > 0:
            jobs.append((str(out / "neg" / f"{stem}_m{round_}.npz"), v, int(neg_sentences),
                         _seed("neg-more", v, round_), True))
    return jobs


def build_banks(out, workers: int = 2, scale: float = 1.0, order=("train", "eval", "neg")) -> list:
    out = Path(out)
    for sub in ("train", "eval", "neg"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = all_jobs(out, scale)
    fam_first = {"festival": 0, "flite": 1, "espeak": 2}
    jobs.sort(key=lambda j: (order.index(Path(j[0]).parent.name), fam_first[V.family_of(j[1])]))
    done = []
    with ProcessPoolExecutor(workers) as ex:
        for path, n, dt in ex.map(_job, jobs):
            if n:
                log.info("%s: %d utterances in %.0f s", path, n, dt)
            done.append(path)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every bank size (tests use 0.05)")
    ap.add_argument("--more", default="", metavar="VOICES", help="only extra held-out banks for these voices "
                    "(comma-separated): eval/<voice>.more<R>.npz + neg/<voice>_m<R>.npz")
    ap.add_argument("--more-round", type=int, default=1, metavar="R")
    ap.add_argument("--more-neg", type=int, default=NEG_CHUNK, help="keyword-free sentences per voice and round")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.more:
        out = Path(a.out)
        for sub in ("eval", "neg"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        vs = [v.strip() for v in a.more.split(",") if v.strip()]
        bad = [v for v in vs if v not in V.all_voices()]
        if bad:
            ap.error(f"unknown voices {bad}")
        with ProcessPoolExecutor(a.workers) as ex:
            for path, n, dt in ex.map(_job, more_jobs(out, vs, a.more_round, neg_sentences=a.more_neg)):
                log.info("%s: %d utterances in %.0f s", path, n, dt)
        return 0
    build_banks(a.out, a.workers, a.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
