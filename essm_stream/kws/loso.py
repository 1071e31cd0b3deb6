"""Leave-one-synthesizer-family-out evaluation sets and scoring (torch-free).

Held-out streams of a family (its voices never in training, not even as another engine's copy of
the same person, see voices.fold):

- keyword streams: the family's eval banks (keywords alone, and at the start / middle / end of
  sentences), 1.0-2.5 s gaps, dry; rendered clean and at 20 / 10 / 5 dB SNR with a noise that
  changes every 10 s between babble (the family's own keyword-free sentences, other texts),
  coloured noise and non-stationary noise;
- keyword-free streams: the family's keyword-free sentences (its neg banks, ≈ 1 h), clean in full
  and a 20-minute share at each SNR.
Validation streams (threshold choice) are built the same way from the fold's validation voices.

Each stream is stored with its PCM (int16, for pocketsphinx and the PCM spotter), its events and
the speech-embedding features with their per-step levels, so every model, budget and threshold is
scored on the same numbers without recomputing the frontend. `replay()` runs the spotter's own
decision code (KeywordSpotter._vad/_decide) on engine outputs; `tests/test_kws_loso.py` holds it
equal to KeywordSpotter.process on PCM.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from . import data as D
from . import render as R
from . import voices as V

log = logging.getLogger(__name__)
SR = D.SR
SNRS = (None, 20.0, 10.0, 5.0)
NOISE_CYCLE = ("babble", "pink", "nonstationary", "white", "babble", "brown", "nonstationary", "blue")


def snr_name(snr) -> str:
    return "clean" if snr is None else f"{int(snr)}dB"


def noisy(speech: np.ndarray, snr, rng, babble_pool, seg_s: float = 10.0) -> np.ndarray:
    """speech + a noise that changes kind every seg_s, at `snr` dB against the active speech."""
    if snr is None:
        return speech + 10 ** (-80 / 20) * rng.standard_normal(len(speech))
    n = len(speech)
    noise = np.zeros(n)
    seg = int(seg_s * SR)
    k = int(rng.integers(len(NOISE_CYCLE)))
    for s in range(0, n, seg):
        m = min(seg, n - s)
        kind = NOISE_CYCLE[k % len(NOISE_CYCLE)]
        k += 1
        noise[s:s + m] = R.noise_of(kind if babble_pool or kind != "babble" else "pink", m, rng, babble_pool)
    return R.mix_at_snr(speech, noise, snr)


def to_int16(x: np.ndarray) -> np.ndarray:
    x = x * (10 ** (-6 / 20) / (np.abs(x).max() + 1e-12))            # -6 dBFS peak
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def stream_features(pcm16: np.ndarray):
    """Raw speech-embedding features, per-step levels (dB) and step end times of a whole stream."""
    fe = R._frontend("embedding")
    fe.reset()
    out, lv = [], []
    step = 1280 * 200
    for i in range(0, len(pcm16), step):                       # streamed: levels come with the steps
        out.append(fe.process(pcm16[i:i + step]))
        lv.append(fe.last_levels_db)
    F = np.concatenate(out)
    t = np.array([fe.frame_end_time(i) for i in range(len(F))])
    return F.astype(np.float32), np.concatenate(lv), t


def save_set(path, pcm, events, meta, with_features: bool = True):
    d = {"pcm": pcm, "events": np.array(json.dumps([list(e) for e in events])), "meta": np.array(json.dumps(meta))}
    if with_features:
        F, lv, t = stream_features(pcm)
        d.update(F=F.astype(np.float16), levels=lv, times=t)
    tmp = Path(path).with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **d)
    tmp.replace(path)


def load_set(path) -> dict:
    z = np.load(path, allow_pickle=False)
    d = {k: z[k] for k in z.files if k not in ("events", "meta")}
    d["events"] = [D.Event(e[0], float(e[1]), float(e[2])) for e in json.loads(str(z["events"]))]
    d["meta"] = json.loads(str(z["meta"]))
    d["path"] = str(path)                      # names the set in caches (loso_eval.ps_sweep)
    return d


def load_condition(sets_dir, split: str, family: str, name: str) -> tuple[list[dict], list[dict]]:
    """The keyword and the keyword-free stream sets of one (split, family, condition), e.g.
    ("test", "festival", "10dB"); empty lists where none was built. A condition may also come in parts,
    <split>_<family>_<kind>_<name>.<part>.npz (e.g. one file per speaker, so results can be read per
    speaker: speaker_groups); the plain file first, then the parts in name order."""
    from pathlib import Path
    d = Path(sets_dir)
    kw, neg = ([load_set(p) for p in sorted(d.glob(f"{split}_{family}_{k}_{name}.npz"))
                + sorted(d.glob(f"{split}_{family}_{k}_{name}.*.npz"))] for k in ("kw", "neg"))
    return kw, neg


def _items(banks_dir, sub: str, voices, kinds) -> list[dict]:
    out = []
    for v in voices:
        stem = v.replace(':', '_', 1)
        for f in [Path(banks_dir) / sub / f"{stem}.npz"] + sorted((Path(banks_dir) / sub).glob(f"{stem}.more*.npz")):
            if f.is_file():                  # the voice's bank, then its extra rounds (corpus.more_jobs)
                out += [j for j in V.load_bank(f) if j["kind"] in kinds]
    return out


def _neg_items(banks_dir, voices) -> list[dict]:
    vs = set(voices)
    out = []
    for f in sorted((Path(banks_dir) / "neg").glob("*.npz")):
        items = V.load_bank(f)
        if items and items[0]["voice"] in vs:
            out += items
    return out


def build_sets(banks_dir, out_dir, name: str, kw_items, neg_items, babble_pool, seed: int,
               neg_noisy_s: float = 1200.0, snrs=SNRS, neg_max_s: float | None = None, tag: str = "") -> list[str]:
    """Write <out>/<name>_kw_<snr><tag>.npz and <name>_neg_<snr><tag>.npz (skipping those that exist)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(kw_items))
    speech, events = R.compose([kw_items[i] for i in order], rng, gap_s=(1.0, 2.5), perturb=False)
    ev = list(events)
    rngn = np.random.default_rng(seed + 1)
    nspeech, nevents = R.compose([neg_items[i] for i in rngn.permutation(len(neg_items))], rngn,
                                 gap_s=(0.3, 1.2), perturb=False) if neg_items else (np.zeros(0), [])
    written = []
    for snr in snrs:
        for kind, sp, evs, limit in (("kw", speech, ev, None), ("neg", nspeech, nevents,
                                                                 None if snr is None else neg_noisy_s)):
            path = out / f"{name}_{kind}_{snr_name(snr)}{tag}.npz"
            if path.is_file() or len(sp) == 0 or (kind == "kw" and not kw_items):
                continue
            if kind == "neg" and neg_max_s is not None:
                limit = neg_max_s if limit is None else min(limit, neg_max_s)
            x = sp if limit is None else sp[: int(limit * SR)]
            e = [t for t in evs if t[2] <= len(x) / SR]
            r = np.random.default_rng((seed, int(kind == "neg"), 0 if snr is None else int(snr)))
            pcm = to_int16(noisy(x, snr, r, babble_pool))
            meta = {"name": name, "kind": kind, "snr_db": snr, "seconds": len(pcm) / SR,
                    "keywords": sum(t[0] in D.KEYWORDS for t in e),
                    "voices": sorted({j["voice"] for j in (kw_items if kind == "kw" else neg_items)})}
            save_set(path, pcm, e, meta)
            written.append(str(path))
            log.info("%s: %.0f s, %d keywords", path, meta["seconds"], meta["keywords"])
    return written


def build_family_sets(banks_dir, out_dir, family: str, neg_noisy_s: float = 1200.0, val: bool = True,
                      test: bool = True, snrs=SNRS):
    """Held-out test sets of a fold (a family, or held-out voices: voices.fold_name) + its validation
    sets. Every 7th keyword-free sentence is kept apart as babble, so the babble never speaks the
    negatives' own sentences. Files are named after the fold (test_<fold>_..., val_<fold>_...)."""
    family = V.fold_name(family)
    fold = V.fold(family)
    test_kw = _items(banks_dir, "eval", fold["test"], ("iso", "sent"))
    test_neg = _neg_items(banks_dir, fold["test"])
    pool = [j["audio"] for j in test_neg[::7]] or None
    neg = [j for i, j in enumerate(test_neg) if i % 7]
    if test:
        build_sets(banks_dir, out_dir, f"test_{family}", test_kw, neg, pool, seed=11 + V.fold_seed(family),
                   neg_noisy_s=neg_noisy_s, snrs=snrs)
    if not val:
        return
    rng = np.random.default_rng(5)
    val_kw = _items(banks_dir, "train", fold["val"], ("iso", "sent"))
    val_kw = [val_kw[i] for i in sorted(rng.permutation(len(val_kw))[:VAL_MAX_KW])]
    val_neg = _items(banks_dir, "train", fold["val"], ("neg", "near")) + _neg_items(banks_dir, fold["val"])
    vpool = [j["audio"] for j in val_neg[::7]] or None
    build_sets(banks_dir, out_dir, f"val_{family}", val_kw, [j for i, j in enumerate(val_neg) if i % 7], vpool,
               seed=23 + V.fold_seed(family), neg_noisy_s=300.0, snrs=tuple(x for x in snrs if x in (None, 10.0)),
               neg_max_s=VAL_NEG_S)


FAMILY_SEED = {"espeak": 0, "flite": 100, "festival": 200}   # = voices.fold_seed of the families
VAL_MAX_KW = 200          # validation keywords (a random subset of the validation voices' banks)
VAL_NEG_S = 900.0         # validation keyword-free speech, clean (300 s at 10 dB)


# ----------------------------------------------------------------------------- scoring
def engine_outputs(program, F: np.ndarray, K: int, chunk: int = 4096) -> np.ndarray:
    """(T, C) engine outputs of a whole stream at budget K (features already normalised)."""
    from ..engine import StreamEngine

    eng = StreamEngine(program, batch=1, dtype=np.float32)
    out = [eng.run(np.ascontiguousarray(F[i:i + chunk], dtype=np.float32), K) for i in range(0, len(F), chunk)]
    return np.concatenate(out).reshape(len(F), -1)


def normalise(program, F: np.ndarray) -> np.ndarray:
    fe = program.frontend
    return ((F.astype(np.float64) - np.asarray(fe["mean"])) / np.asarray(fe["std"])).astype(np.float32)


def replay(spotter, Y: np.ndarray, levels: np.ndarray, times: np.ndarray, threshold: float | None = None):
    """The spotter's decisions (energy gate, smoothing, re-arm, refractory) on precomputed engine outputs."""
    if threshold is not None:
        spotter.threshold = float(threshold)
    spotter.reset()
    out = []
    for i in range(len(Y)):
        t = float(times[i])
        spotter._vad(float(levels[i]), t)
        ps = spotter._decide(spotter._posterior(Y[i]), t, out)
        spotter.hops += 1
        del ps
    return out


def vad_active(spotter, levels: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Per step: may a keyword fire (the spotter's energy gate, KeywordSpotter._vad), computed once."""
    spotter.reset()
    ok = np.empty(len(levels), dtype=bool)
    for i in range(len(levels)):
        spotter._vad(float(levels[i]), float(times[i]))
        ok[i] = float(times[i]) <= spotter._active_until
    return ok


def fast_replay(spotter, Y: np.ndarray, levels: np.ndarray, times: np.ndarray, threshold: float,
                active: np.ndarray | None = None):
    """replay() without the per-step Python loop: the same rule (smoothing, arg-max, re-arm below
    rearm x threshold, refractory, energy gate) visiting only the steps that reach the threshold.
    tests/test_kws_embed.py holds it equal to replay() and to KeywordSpotter.process."""
    from .spotter import Detection

    if active is None:
        active = vad_active(spotter, levels, times)
    z = Y.astype(np.float64) - Y.max(1, keepdims=True)
    P = np.exp(z)
    P /= P.sum(1, keepdims=True)
    n = spotter.n_smooth
    if n > 1:
        c = np.cumsum(P, axis=0)
        c = np.concatenate([np.zeros((1, P.shape[1])), c])
        idx = np.arange(len(P))
        lo = np.maximum(0, idx - n + 1)
        P = (c[idx + 1] - c[lo]) / np.minimum(idx + 1, n)[:, None]
    kw = spotter.keyword_ids
    j = kw[P[:, kw].argmax(1)]
    pj = P[np.arange(len(P)), j]
    cand = np.nonzero((pj >= threshold) & (j == P.argmax(1)) & active)[0]
    below = {int(c): np.nonzero(P[:, c] < spotter.rearm * threshold)[0] for c in np.unique(j[cand])}
    last_t, fired_at = -np.inf, {}
    out = []
    for i in cand:
        c, t = int(j[i]), float(times[i])
        if c in fired_at:
            b = below[c]
            k = np.searchsorted(b, fired_at[c], side="right")
            if k >= len(b) or b[k] > i:
                continue                                   # not re-armed since it last fired
        if t - last_t < spotter.refractory_s:
            continue
        out.append(Detection(spotter.labels[c], float(pj[i]), round(t, 4)))
        last_t, fired_at[c] = t, int(i)
    return out


THRESHOLDS = tuple(np.round(np.concatenate([np.linspace(0.3, 0.9, 13), [0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.975, 0.98,
                                                                         0.985, 0.99, 0.9925, 0.995, 0.9965, 0.998,
                                                                         0.9985, 0.999, 0.9995, 0.9998, 0.9999]]), 4))


def sweep_thresholds(spotter, Y, levels, times, events, seconds, thresholds=THRESHOLDS) -> list[dict]:
    from .evaluate import score_stream
    rows = []
    active = vad_active(spotter, levels, times)
    for th in thresholds:
        s, _ = score_stream(fast_replay(spotter, Y, levels, times, th, active), events, seconds)
        rows.append({"threshold": float(th), **s.to_dict()})
    return rows


FA_ON = ("all", "neg")


def recorded_speakers(spec) -> frozenset | None:
    """The speakers (voices.speaker_of) of a comma-separated list of recorded voices, e.g.
    'festival:cmu_us_slt_arctic_hts,flite:slt' (one person through two engines); None for None / ''.
    Raises ConfigError naming an unknown voice or an espeak-ng variant (no recorded person)."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return None
    parts = [x.strip() for x in (spec.split(",") if isinstance(spec, str) else spec) if x.strip()]
    known = set(V.all_voices())
    bad = [x for x in parts if x not in known or V.family_of(x) == "espeak"]
    if bad:
        raise D.ConfigError(f"recorded voices {bad}: not recorded voices of {V.FAMILIES} "
                            "(family:voice, e.g. festival:cmu_us_slt_arctic_hts; espeak-ng variants are no person)")
    return frozenset(V.speaker_of(x) for x in parts)


def is_recorded(voices, speakers=None) -> bool:
    """Whether a set's voices (its meta["voices"]) are all recorded people (no espeak-ng formant voice);
    with speakers (recorded_speakers), all of them spoken by those people (through any engine)."""
    if not voices or not all(V.family_of(v) != "espeak" for v in voices):
        return False
    return speakers is None or all(V.speaker_of(v) in speakers for v in voices)


def speaker_quantile_rate(rates, q: float) -> float:
    """The q-quantile over speakers of per-speaker rates, defined as the ceil(q * n)-th smallest of the n
    rates (1-based; no interpolation): q = 0.8 of 6 or 8 speakers is the second-worst, of 12 the third-worst,
    q = 1 the worst. Raises ValueError for no rates or q outside (0, 1]."""
    import math
    r = sorted(float(x) for x in rates)
    if not r:
        raise ValueError("speaker_quantile_rate: no speakers")
    if not (0 < q <= 1):
        raise ValueError(f"speaker quantile must be in (0, 1], got {q!r}")
    return r[max(1, math.ceil(q * len(r) - 1e-9)) - 1]


def speaker_groups(sets) -> dict:
    """{speaker: [sets]} by each set's meta voices (voices.speaker_of: slt through festival and flite is one
    person). A stream holds no per-utterance voice labels, so a set whose voices are several speakers cannot
    be split: it is its own group, keyed by its speakers joined with '+' (per-speaker rules need per-speaker
    set files; a key with '+' is such a pooled set)."""
    out = {}
    for s in sets:
        out.setdefault(speaker_key(s), []).append(s)
    return out


def speaker_key(s: dict) -> str:
    """A set's speakers (voices.speaker_of of its meta voices, or of its "voices" as calib.load_light gives
    them) sorted and joined with '+'; '?' without voices."""
    voices = (s.get("meta") or {}).get("voices") or s.get("voices") or []
    return "+".join(sorted({V.speaker_of(v) for v in voices})) or "?"


def speaker_split(sets, per_rows) -> tuple[dict, list[str]]:
    """Keyword-free sets and their row-aligned threshold rows (one list per set) grouped for a per-speaker
    budget: ({speaker: [rows of each of its sets]}, [names of sets that pool several speakers or name none]).
    A pooled stream keeps no per-utterance voice labels, so it cannot be split: callers leave it out of the
    per-speaker budget (it still counts in the pooled one)."""
    from pathlib import Path
    out, pooled = {}, []
    for s, rows in zip(sets, per_rows):
        key = speaker_key(s)
        if "+" in key or key == "?":
            pooled.append(Path(s.get("path", "?")).name)
        else:
            out.setdefault(key, []).append(rows)
    return dict(sorted(out.items())), pooled


def pick_threshold(val_rows_kw: list[dict], val_rows_neg: list[dict], fa_target: float = 2.0,
                   fa_on: str = "all", guard_rows: list[dict] | None = None, guard_cap: float | None = None,
                   speaker_rows: dict | None = None, speaker_cap: float | None = None,
                   speaker_quantile: float = 0.8) -> dict:
    """Highest validation hit rate whose false accepts/h stay <= fa_target; if none reaches the
    target, the threshold with the fewest false accepts/h (as budgeted).

    fa_on picks what the budget counts:
      "all": false accepts in the validation keyword streams (mostly keyword confusions: a wrong
             keyword where another was said) and in the keyword-free streams, over both streams' hours;
      "neg": keyword-free streams only, the quantity the issue's target (<= 2 FA/h of keyword-free
             speech) and the held-out tables measure.
    Either way the returned dict carries all three rates: neg_fa_per_hour (keyword-free),
    kw_fa_per_hour (false accepts inside the keyword streams per hour of them: confusions, never
    dropped, a wrong keyword is an error a user sees) and pooled_fa_per_hour; fa_per_hour is the
    budgeted one.
    guard_rows / guard_cap: a second budget that must hold too, on another set of keyword-free rows
    (row-aligned; e.g. the recorded validation speakers' speech alone, `kws-eval --recorded-fa-target`);
    if no threshold meets both, the fewest guard false accepts/h (then the first budget, then hits).
    speaker_rows / speaker_cap / speaker_quantile: a per-speaker budget, one more guard of the same kind:
    speaker_rows = {speaker: keyword-free rows of that validation speaker alone, row-aligned with the
    threshold rows}; at each threshold the speakers' false accepts/h (events / hours) are ranked and the
    ceil(speaker_quantile * n)-th smallest of the n rates (speaker_quantile_rate: 0.8 of 6-8 speakers is the
    second-worst) must stay <= speaker_cap. All given budgets must hold; if no threshold meets them all,
    the fewest guard false accepts/h in order (recorded guard, then the speaker quantile), then the first
    budget, then hits. The pick then carries speaker_q_fa_per_hour, speaker_cap, speaker_quantile and
    speaker_fa_per_hour ({speaker: rate}).
    """
    if fa_on not in FA_ON:
        raise ValueError(f"fa_on must be one of {FA_ON}, got {fa_on!r}")
    if len(val_rows_kw) != len(val_rows_neg) or not val_rows_kw:
        raise ValueError(f"pick_threshold needs equal, non-empty threshold rows (keyword streams: {len(val_rows_kw)}, "
                         f"keyword-free: {len(val_rows_neg)})")
    cand = []
    for a, b in zip(val_rows_kw, val_rows_neg):
        if abs(a["threshold"] - b["threshold"]) > 1e-12:
            raise ValueError(f"threshold rows differ: {a['threshold']} vs {b['threshold']}")
        neg = b["false_accepts"] / max(b["hours"], 1e-9)
        kwr = a["false_accepts"] / max(a["hours"], 1e-9)
        pooled = (a["false_accepts"] + b["false_accepts"]) / max(a["hours"] + b["hours"], 1e-9)
        cand.append({"threshold": a["threshold"], "hit_rate": a["hit_rate"],
                     "fa_per_hour": neg if fa_on == "neg" else pooled, "fa_on": fa_on,
                     "neg_fa_per_hour": neg, "kw_fa_per_hour": kwr, "pooled_fa_per_hour": pooled})
    def aligned(rows, what):
        if rows is None or len(rows) != len(cand):
            raise ValueError(f"pick_threshold: {what} rows must be aligned with the threshold rows "
                             f"({len(cand)} thresholds, got {None if rows is None else len(rows)})")
        for c, g in zip(cand, rows):
            if abs(c["threshold"] - g["threshold"]) > 1e-12:
                raise ValueError(f"{what} rows differ: {c['threshold']} vs {g['threshold']}")
        return [g["false_accepts"] / max(g["hours"], 1e-9) for g in rows]

    guards = []                                     # keys of the extra budgets, in fallback order
    if guard_cap is not None:
        for c, v in zip(cand, aligned(guard_rows, "guard")):
            c["guard_fa_per_hour"], c["guard_cap"] = v, float(guard_cap)
        guards.append(("guard_fa_per_hour", float(guard_cap)))
    if speaker_cap is not None:
        if not speaker_rows:
            raise ValueError("pick_threshold: speaker_cap needs speaker_rows ({speaker: keyword-free rows})")
        if not (0 < speaker_quantile <= 1):
            raise ValueError(f"speaker quantile must be in (0, 1], got {speaker_quantile!r}")
        per = {str(k): aligned(v, f"speaker {k!r}") for k, v in speaker_rows.items()}
        for i, c in enumerate(cand):
            rates = {k: v[i] for k, v in per.items()}
            c["speaker_fa_per_hour"] = rates
            c["speaker_q_fa_per_hour"] = speaker_quantile_rate(rates.values(), speaker_quantile)
            c["speaker_cap"], c["speaker_quantile"] = float(speaker_cap), float(speaker_quantile)
        guards.append(("speaker_q_fa_per_hour", float(speaker_cap)))
    ok = [c for c in cand if c["fa_per_hour"] <= fa_target and all(c[k] <= cap for k, cap in guards)]
    if ok:
        return max(ok, key=lambda c: (c["hit_rate"], c["threshold"]))
    return min(cand, key=lambda c: tuple(c[k] for k, _ in guards) + (c["fa_per_hour"], -c["hit_rate"]))


def main(argv=None) -> int:
    """python -m essm_stream.kws.loso BANKS OUT [--families festival,flite,espeak] [--neg-noisy-s 600]"""
    import argparse

    ap = argparse.ArgumentParser(description="build the held-out and validation stream sets of each family")
    ap.add_argument("banks")
    ap.add_argument("out")
    ap.add_argument("--families", default="festival,flite,espeak")
    ap.add_argument("--neg-noisy-s", type=float, default=600.0,
                    help="seconds of keyword-free speech rendered at each noisy SNR (clean: all of it)")
    ap.add_argument("--snrs", default="clean,20,10,5", help="test conditions to build (parallel runs may split them)")
    ap.add_argument("--part", default="both", choices=("both", "test", "val"))
    ap.add_argument("--hold-out", default=None, type=V.fold_name, metavar="VOICES",
                    help="a speaker fold instead of --families: held-out voices, e.g. "
                    "festival:ked_diphone,festival:cmu_us_slt_arctic_hts (their speakers' other voices leave training too)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    snrs = tuple(None if x == "clean" else float(x) for x in a.snrs.split(","))
    for fam in ([a.hold_out] if a.hold_out else a.families.split(",")):
        build_family_sets(a.banks, a.out, fam, a.neg_noisy_s, val=a.part != "test", test=a.part != "val", snrs=snrs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
