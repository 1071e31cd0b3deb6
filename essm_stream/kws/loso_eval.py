"""`essm-stream kws-eval --loso`: every held-out family's streams through the ES-SSM (K = 4 and 32),
the previous bundled model, the TC-ResNet8 baseline and pocketsphinx, in one run (torch-free).

Thresholds: chosen on the fold's validation voices only (pick_threshold: the best validation hit
rate at <= fa_target false accepts/h, counted over validation keyword + keyword-free streams with
fa_on="all", over keyword-free streams only with fa_on="neg"; the other rates are reported beside
it, keyword confusions included); pocketsphinx's keyword threshold is chosen the same way from its
own sweep. Test numbers are then read at those
thresholds; the DET curves (hit rate vs false accepts/h over all thresholds) are reporting only.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from . import data as D
from . import loso as L
from .evaluate import score_stream

log = logging.getLogger(__name__)
PS_THRESHOLDS = (1e-10, 1e-5, 1e0, 1e10, 1e20, 1e30)   # short words need strict (large) values
PEER_NEG_S = 600.0       # pocketsphinx and the previous model: the first 10 min of each keyword-free set (CPU)


# ----------------------------------------------------------------------------- pocketsphinx peer
def pocketsphinx_detections(pcm: np.ndarray, threshold: float, refractory_s: float = 1.0):
    """Keyword-list search of pocketsphinx's bundled en-us model; one detection per word and refractory_s."""
    import tempfile

    from pocketsphinx import Decoder

    from .spotter import Detection

    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as f:
        f.write("".join(f"{w} /{threshold:g}/\n" for w in D.KEYWORDS))
        path = f.name
    dec = Decoder(kws=path, loglevel="FATAL")
    Path(path).unlink()
    out, last = [], -np.inf
    dec.start_utt()
    for i in range(0, len(pcm), 16000 * 30):
        dec.process_raw(pcm[i:i + 16000 * 30].astype(np.int16).tobytes(), False, False)
    dec.end_utt()
    segs = sorted(((s.end_frame + 1) * 0.01, s.word.strip()) for s in (dec.seg() or []))   # None: no hypothesis
    for t, w in segs:
        if w in D.KEYWORDS and t - last >= refractory_s:
            out.append(Detection(w, 1.0, round(t, 3)))
            last = t
    return out


def _ps_job(args):
    pcm, th = args
    t = time.perf_counter()
    return [(d.label, d.time_s) for d in pocketsphinx_detections(pcm, th)], time.perf_counter() - t


def _ps_cache_file(cache_dir, s: dict, threshold: float, limit_s: float | None):
    """The cache file of one (set, threshold, cut), or None when caching is off or the set has no path."""
    if cache_dir is None or not s.get("path"):
        return None
    cut = "all" if limit_s is None else f"{limit_s:g}s"
    return Path(cache_dir) / f"{Path(s['path']).stem}__{threshold:g}__{cut}.json"


def ps_cache_put(cache_dir, s: dict, threshold: float, limit_s: float | None, detections, decode_s: float = 0.0) -> None:
    """Store pocketsphinx's detections [(label, time_s), ...] on set s (cut to limit_s seconds) at threshold."""
    from ..fileio import atomic_write_bytes

    f = _ps_cache_file(cache_dir, s, threshold, limit_s)
    if f is None:
        return
    f.parent.mkdir(parents=True, exist_ok=True)
    n = len(s["pcm"]) if limit_s is None else min(len(s["pcm"]), int(limit_s * 16000))
    atomic_write_bytes(f, json.dumps({"set": Path(s["path"]).name, "threshold": threshold, "limit_s": limit_s,
                                      "samples": n, "decode_s": decode_s,
                                      "detections": [[str(a), float(b)] for a, b in detections]}).encode())


def ps_cache_get(cache_dir, s: dict, threshold: float, limit_s: float | None):
    """Cached detections of (set, threshold, cut), or None (no cache, not cached, or cached for another
    length of audio: a set rebuilt under the same name is decoded again)."""
    f = _ps_cache_file(cache_dir, s, threshold, limit_s)
    if f is None or not f.is_file():
        return None
    j = json.loads(f.read_text())
    n = len(s["pcm"]) if limit_s is None else min(len(s["pcm"]), int(limit_s * 16000))
    if j.get("samples") != n:
        log.warning("pocketsphinx cache %s is for %s samples, the set has %d: decoded again", f, j.get("samples"), n)
        return None
    return [(a, float(b)) for a, b in j["detections"]]


def ps_sweep(sets: list[dict], thresholds=PS_THRESHOLDS, workers: int = 3, limit_s: float | None = None,
             cache_dir=None) -> list[dict]:
    """Pooled pocketsphinx hits / false accepts per threshold (sets x thresholds in `workers` processes,
    in this process when workers <= 1; each set cut to its first limit_s seconds when given).
    cache_dir: detections per (set file, threshold, cut) are read from / written to it (ps_cache_get/put),
    so a later run decodes only what is new."""
    from .spotter import Detection

    cut = []
    for s in sets:
        n = len(s["pcm"]) if limit_s is None else min(len(s["pcm"]), int(limit_s * 16000))
        cut.append((s, s["pcm"][:n], [e for e in s["events"] if e.end_s <= n / 16000]))
    jobs = [(th, s, pcm) for th in thresholds for s, pcm, _ in cut]
    dets = [ps_cache_get(cache_dir, s, th, limit_s) for th, s, _ in jobs]
    todo = [i for i, d in enumerate(dets) if d is None]
    if todo:
        args = [(jobs[i][2], jobs[i][0]) for i in todo]
        if workers <= 1:
            outs = [_ps_job(a) for a in args]
        else:
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(workers) as ex:
                outs = list(ex.map(_ps_job, args))
        for i, (d, sec) in zip(todo, outs):
            dets[i] = d
            ps_cache_put(cache_dir, jobs[i][1], jobs[i][0], limit_s, d, sec)
    log.info("pocketsphinx: %d decodes, %d from the cache", len(todo), len(jobs) - len(todo))
    rows = []
    for i, th in enumerate(thresholds):
        sc = []
        for j, (s, pcm, ev) in enumerate(cut):
            d = [Detection(a, 1.0, b) for a, b in dets[i * len(cut) + j]]
            sc.append(score_stream(d, ev, len(pcm) / 16000)[0])
        h, n, fa, hours = (sum(x.hits for x in sc), sum(x.keywords for x in sc), sum(x.false_accepts for x in sc),
                           sum(x.hours for x in sc))
        rows.append({"threshold": th, "hits": h, "keywords": n, "false_accepts": fa, "hours": hours,
                     "hit_rate": h / max(1, n), "fa_per_hour": fa / max(hours, 1e-9)})
    return rows


def pick(rows, fa_target):
    ok = [r for r in rows if r["fa_per_hour"] <= fa_target]
    if ok:
        return max(ok, key=lambda r: (r["hit_rate"], -r["fa_per_hour"]))
    return min(rows, key=lambda r: (r["fa_per_hour"], -r["hit_rate"]))


# ----------------------------------------------------------------------------- ES-SSM
def essm_set_rows(prog, spotter, sets, K, thresholds=L.THRESHOLDS) -> list[list[dict]]:
    """Each set's own hits / false accepts per threshold at budget K (one engine pass per set)."""
    per = []
    for s in sets:
        Y = L.engine_outputs(prog, L.normalise(prog, s["F"]), K)
        per.append(L.sweep_thresholds(spotter, Y, s["levels"], s["times"], s["events"], len(s["pcm"]) / 16000,
                                      thresholds))
    return per


def essm_rows(prog, spotter, sets, K, thresholds=L.THRESHOLDS) -> list[dict]:
    """Pooled (over the sets) hits / false accepts per threshold at budget K."""
    return pool_rows(essm_set_rows(prog, spotter, sets, K, thresholds), thresholds)


def pool_rows(per: list[list[dict]], thresholds=L.THRESHOLDS) -> list[dict]:
    """Sum row-aligned per-set threshold rows (essm_set_rows) into pooled rows."""
    rows = []
    for i, th in enumerate(thresholds):
        h = sum(p[i]["hits"] for p in per)
        n = sum(p[i]["keywords"] for p in per)
        fa = sum(p[i]["false_accepts"] for p in per)
        hours = sum(p[i]["hours"] for p in per)
        rows.append({"threshold": float(th), "hits": h, "keywords": n, "false_accepts": fa, "hours": hours,
                     "hit_rate": h / max(1, n), "fa_per_hour": fa / max(hours, 1e-9)})
    return rows


def speaker_table(kw_sets, kw_per, neg_sets, neg_per, th) -> dict:
    """Per speaker group (loso.speaker_key of each set) at threshold th: hits / keywords of its keyword sets,
    false-accept events / hours of its keyword-free sets (rows from essm_set_rows, aligned with the sets).
    The groups partition the sets, so the rows sum to the pooled numbers at th."""
    out = {}
    for sets, per, kind in ((kw_sets, kw_per, "kw"), (neg_sets, neg_per, "neg")):
        for s, rows in zip(sets, per):
            a = at_threshold(rows, th)
            d = out.setdefault(L.speaker_key(s), {"hits": 0, "keywords": 0, "fa_neg": 0, "neg_hours": 0.0,
                                                  "fa_in_kw_stream": 0, "kw_hours": 0.0})
            if kind == "kw":
                d["hits"] += a["hits"]
                d["keywords"] += a["keywords"]
                d["fa_in_kw_stream"] += a["false_accepts"]
                d["kw_hours"] += a["hours"]
            else:
                d["fa_neg"] += a["false_accepts"]
                d["neg_hours"] += a["hours"]
    for d in out.values():
        d["hit_rate"] = d["hits"] / max(1, d["keywords"])
        d["fa_per_hour_neg"] = d["fa_neg"] / max(d["neg_hours"], 1e-9)
    return dict(sorted(out.items()))


def at_threshold(rows, th):
    return min(rows, key=lambda r: abs(r["threshold"] - th))


def hits_at_fa(rows, fa) -> float:
    """Best hit rate among thresholds whose false accepts/h do not exceed fa (DET read-out)."""
    ok = [r["hit_rate"] for r in rows if r["fa_per_hour"] <= fa + 1e-9]
    return max(ok) if ok else 0.0


def det_point(kw_rows: list[dict], neg_rows: list[dict], cap: float) -> dict:
    """The DET read-out at <= cap false accepts per hour of keyword-free speech: among the thresholds of
    one sweep (kw_rows and neg_rows row-aligned, as essm_rows gives them) whose keyword-free rate stays
    <= cap, the one with the most hits (ties: fewer false accepts, then the lower threshold). If none
    fits: 0 hits, threshold None. Keyword-stream false accepts (confusions) are not budgeted."""
    if len(kw_rows) != len(neg_rows) or any(a["threshold"] != b["threshold"] for a, b in zip(kw_rows, neg_rows)):
        raise ValueError("det_point: keyword and keyword-free rows must come from the same threshold sweep")
    n = kw_rows[0]["keywords"] if kw_rows else 0
    hours = neg_rows[0]["hours"] if neg_rows else 0.0
    ok = [(a, b) for a, b in zip(kw_rows, neg_rows) if b["false_accepts"] / max(b["hours"], 1e-9) <= cap + 1e-9]
    if not ok:
        return {"threshold": None, "hits": 0, "keywords": n, "hit_rate": 0.0, "false_accepts": 0, "hours": hours,
                "fa_per_hour": 0.0}
    a, b = max(ok, key=lambda ab: (ab[0]["hits"], -ab[1]["false_accepts"], -ab[0]["threshold"]))
    return {"threshold": a["threshold"], "hits": a["hits"], "keywords": a["keywords"], "hit_rate": a["hit_rate"],
            "false_accepts": b["false_accepts"], "hours": b["hours"],
            "fa_per_hour": b["false_accepts"] / max(b["hours"], 1e-9)}


def old_model_score(sets, program=None, limit_s: float | None = None) -> dict:
    """The previous bundled log-mel model through KeywordSpotter on the PCM, at its stored threshold."""
    from .evaluate import run_spotter
    from .spotter import KeywordSpotter
    sp = KeywordSpotter(program)
    h = n = fa = 0
    hours = 0.0
    for s in sets:
        m = len(s["pcm"]) if limit_s is None else min(len(s["pcm"]), int(limit_s * 16000))
        ev = [e for e in s["events"] if e.end_s <= m / 16000]
        sc, _ = score_stream(run_spotter(sp, s["pcm"][:m]), ev, m / 16000)
        h, n, fa, hours = h + sc.hits, n + sc.keywords, fa + sc.false_accepts, hours + sc.hours
    return {"hits": h, "keywords": n, "false_accepts": fa, "hours": hours, "hit_rate": h / max(1, n),
            "fa_per_hour": fa / max(hours, 1e-9), "threshold": sp.threshold}


def evaluate_family(family: str, sets_dir, program_path, old_program=None, fa_target: float = 2.0,
                    pocketsphinx: bool = True, gate: bool = True, fa_on: str = "all", ps: dict | None = None,
                    recorded_fa_target: float | None = None, recorded_voices=None,
                    speaker_fa_target: float | None = None, speaker_quantile: float = 0.8) -> dict:
    """One program on one fold: threshold on the fold's validation sets, then every test condition present.
    ps (pocketsphinx options, all optional): threshold (a value chosen elsewhere by a declared rule: no
    validation sweep here), val_limit_s (cut each clean validation set to its first seconds in the sweep),
    neg_s (keyword-free seconds per test set it decodes; default PEER_NEG_S, None = all), cache (folder of
    per-set detections, ps_sweep), workers (processes).
    recorded_fa_target: a second validation cap on the recorded validation speakers' keyword-free speech
    (loso.pick_threshold guard; sets whose voices are all recorded people); recorded_voices (a comma-separated
    list of recorded voices, loso.recorded_speakers) narrows that guard to the sets spoken by those speakers alone.
    speaker_fa_target / speaker_quantile: a per-speaker validation cap (loso.pick_threshold's speaker budget):
    the keyword-free validation sets are grouped by speaker (loso.speaker_groups, from their meta voices); the
    speaker_quantile-quantile over those speakers of FA/h must stay <= speaker_fa_target. A set that pools
    several speakers cannot be split (streams keep no per-utterance voice labels): it counts in the pooled cap
    only and is listed in val_speaker_pooled_sets; with no single-speaker set at all, FileNotFoundError.
    Every test condition whose sets hold more than one speaker group gets a per-group read-out at the chosen
    threshold, K = 32 (conditions[...]["K32_speakers"]; sums to the pooled K32 numbers)."""
    from ..program import StreamProgram
    from .spotter import KeywordSpotter

    sets_dir = Path(sets_dir)
    prog = StreamProgram.load(program_path)
    sp = KeywordSpotter(prog)
    t0 = time.perf_counter()
    val = {k: [L.load_set(p) for p in sorted(sets_dir.glob(f"val_{family}_{k}_*.npz"))] for k in ("kw", "neg")}
    vn_per = essm_set_rows(prog, sp, val["neg"], prog.k_max)
    vk, vn = essm_rows(prog, sp, val["kw"], prog.k_max), pool_rows(vn_per)
    spk_rows, pooled_sets = None, []
    if speaker_fa_target is not None:           # per-speaker cap: one row list per validation speaker
        spk_rows, pooled_sets = L.speaker_split(val["neg"], vn_per)
        if not spk_rows:
            raise FileNotFoundError(f"--speaker-fa-target: no keyword-free validation set (val_{family}_neg_*) in "
                                    f"{sets_dir} is spoken by one speaker; a pooled stream cannot be split by speaker: "
                                    "build one keyword-free validation set per speaker")
        if pooled_sets:
            log.warning("speaker cap: %d validation sets pool several speakers and count in the pooled cap only: %s",
                        len(pooled_sets), pooled_sets)
        spk_rows = {k: pool_rows(v) for k, v in spk_rows.items()}
    guard = None
    if recorded_fa_target is not None:          # a second cap on the recorded validation speakers' speech alone
        spk = L.recorded_speakers(recorded_voices)
        rec = [x for x in val["neg"] if L.is_recorded(x["meta"].get("voices"), spk)]
        if not rec:
            raise FileNotFoundError(f"--recorded-fa-target: no keyword-free validation set of recorded voices "
                                    f"{'' if spk is None else 'of ' + str(recorded_voices) + ' '}"
                                    f"(val_{family}_neg_*) in {sets_dir}")
        guard = essm_rows(prog, sp, rec, prog.k_max)
    choice = L.pick_threshold(vk, vn, fa_target, fa_on, guard, recorded_fa_target,
                              speaker_rows=spk_rows, speaker_cap=speaker_fa_target, speaker_quantile=speaker_quantile)
    th = choice["threshold"]
    fe = dict(prog.frontend)                      # the program carries the validation threshold from now on
    fe["detector"] = dict(fe.get("detector", {}), threshold=th)
    prog.set_frontend(fe)
    prog.save(program_path)
    res = {"family": family, "program": str(program_path), "threshold": th, "val_choice": choice, "fa_on": fa_on,
           "val_hours": vk[0]["hours"] + vn[0]["hours"], "val_kw_hours": vk[0]["hours"],
           "val_neg_hours": vn[0]["hours"], "conditions": {}}
    if guard is not None:
        res["recorded_fa_target"] = recorded_fa_target
        res["val_recorded_neg_hours"] = guard[0]["hours"]
        res["recorded_voices"] = recorded_voices if isinstance(recorded_voices, (str, type(None))) else ",".join(recorded_voices)
        res["val_recorded_sets"] = [Path(x["path"]).name for x in rec]
        res["val_recorded_neg_curve"] = guard
    if spk_rows is not None:
        res["speaker_fa_target"], res["speaker_quantile"] = speaker_fa_target, speaker_quantile
        res["val_speakers"] = {k: {"hours": v[0]["hours"]} for k, v in spk_rows.items()}
        res["val_speaker_pooled_sets"] = pooled_sets
        res["val_speaker_neg_curves"] = spk_rows
    ps = dict(ps or {})
    pso = {"workers": ps.get("workers", 3), "cache_dir": ps.get("cache")}
    ps_neg_s = ps.get("neg_s", PEER_NEG_S)
    if pocketsphinx:
        res["pocketsphinx_neg_s"] = ps_neg_s
        clean = {k: [x for x in val[k] if x["meta"].get("snr_db") is None] for k in ("kw", "neg")}
        if ps.get("threshold") is not None:
            res["pocketsphinx_threshold"] = float(ps["threshold"])
            res["pocketsphinx_rule"] = "given"                 # chosen elsewhere (--ps-threshold), not here
        elif fa_on == "neg":
            lim = ps.get("val_limit_s")
            pk, pn = ps_sweep(clean["kw"], limit_s=lim, **pso), ps_sweep(clean["neg"], limit_s=lim, **pso)
            res["pocketsphinx_val"] = {"kw": pk, "neg": pn, "limit_s": lim}
            res["pocketsphinx_threshold"] = L.pick_threshold(pk, pn, fa_target, "neg")["threshold"]
            res["pocketsphinx_rule"] = "validation"
        else:
            psv = ps_sweep(clean["kw"] + clean["neg"], limit_s=ps.get("val_limit_s"), **pso)
            res["pocketsphinx_val"] = psv
            res["pocketsphinx_threshold"] = pick(psv, fa_target)["threshold"]
            res["pocketsphinx_rule"] = "validation"
    for snr in L.SNRS:
        name = L.snr_name(snr)
        kw, neg = L.load_condition(sets_dir, "test", family, name)
        if not kw:
            continue
        c = {"kw_seconds": sum(len(s["pcm"]) for s in kw) / 16000, "neg_seconds": sum(len(s["pcm"]) for s in neg) / 16000}
        for K in (32, 4):
            pk_, pn_ = essm_set_rows(prog, sp, kw, K), essm_set_rows(prog, sp, neg, K)
            rk, rn = pool_rows(pk_), pool_rows(pn_) if neg else None
            if K == 32:
                by = speaker_table(kw, pk_, neg, pn_, th)
                if len(by) > 1:
                    c["K32_speakers"] = by
            c[f"K{K}_kw_curve"], c[f"K{K}_neg_curve"] = rk, rn
            a = at_threshold(rk, th)
            b = at_threshold(rn, th) if rn else {"false_accepts": 0, "hours": 0.0}
            c[f"K{K}"] = {"hit_rate": a["hit_rate"], "hits": a["hits"], "keywords": a["keywords"],
                          "fa_neg": b["false_accepts"], "neg_hours": b["hours"],
                          "fa_per_hour_neg": b["false_accepts"] / max(b["hours"], 1e-9),
                          "fa_in_kw_stream": a["false_accepts"], "kw_hours": a["hours"]}
        if old_program is not False and snr in (None, 10.0):
            c["old"] = {"kw": old_model_score(kw, old_program),
                        "neg": old_model_score(neg, old_program, PEER_NEG_S) if neg else None}
        if pocketsphinx:
            pth = res["pocketsphinx_threshold"]
            pk = ps_sweep(kw, (pth,), **pso)[0]
            pn = ps_sweep(neg, (pth,), limit_s=ps_neg_s, **pso)[0] if neg else None
            c["pocketsphinx"] = {"kw": pk, "neg": pn}
        res["conditions"][name] = c
        log.info("%s %s: K=32 %.1f%% %.1f FA/h | K=4 %.1f%%", family, name, 100 * c["K32"]["hit_rate"],
                 c["K32"]["fa_per_hour_neg"], 100 * c["K4"]["hit_rate"])
    clean = [L.load_set(p) for p in sorted(sets_dir.glob(f"test_{family}_*_clean.npz"))]
    if clean and gate:
        res["gate"] = gate_effect(program_path, clean, limit_s=300.0)
    res["seconds"] = time.perf_counter() - t0
    return res


def frontend_costs(seconds: float = 30.0) -> dict:
    """CPU ms per 80 ms hop of each frontend and per step of the engine (loaded shared machine)."""
    from .embed import SpeechEmbedding, embedding_params
    from .frontend import LogMel, frontend_params
    x = (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 0.05).astype(np.float32)
    out = {}
    for name, fe, hop in (("speech_embedding", SpeechEmbedding(embedding_params(), normalize=False), 1280),
                          ("logmel", LogMel(frontend_params(), normalize=False), 1280)):
        fe.reset()
        t = time.thread_time()
        for i in range(0, len(x), hop):
            fe.process(x[i:i + hop])
        out[name + "_ms_per_80ms"] = 1e3 * (time.thread_time() - t) / (len(x) / hop)
    return out


def extras(family: str, sets_dir, program_path, old_program, out_path) -> dict:
    """The threshold-independent peers of a fold, computed apart (they need no validation set): the
    previous model at clean and 10 dB, and the frontend gate's effect; written to out_path (JSON)."""
    sets_dir = Path(sets_dir)
    res = {"old": {}}
    for snr in (None, 10.0):
        name = L.snr_name(snr)
        kw, neg = L.load_condition(sets_dir, "test", family, name)
        if kw and old_program:
            res["old"][name] = {"kw": old_model_score(kw, old_program),
                                "neg": old_model_score(neg, old_program, PEER_NEG_S) if neg else None}
    clean = [L.load_set(p) for p in sorted(sets_dir.glob(f"test_{family}_*_clean.npz"))]
    if clean:
        res["gate"] = gate_effect(program_path, clean, limit_s=300.0)
    _write(out_path, json.dumps(res, indent=1, default=float))
    return res


def _write(path, text: str) -> None:
    from ..fileio import atomic_write_bytes
    atomic_write_bytes(path, text.encode())


def model_dirs(models) -> dict:
    """{name: folder} from one folder (named "ES-SSM"), a list of folders or NAME=FOLDER strings (named after
    the folder when no NAME is given), or a dict; names must differ."""
    if isinstance(models, dict):
        return {str(k): Path(v) for k, v in models.items()}
    if isinstance(models, (str, Path)):
        return {"ES-SSM": Path(models)}
    out = {}
    for m in models:
        name, _, folder = str(m).rpartition("=")
        name = name or Path(folder).name
        if not folder or name in out:
            raise ValueError(f"--models: {m!r}: " + ("empty folder" if not folder else f"the name {name!r} is used twice"))
        out[name] = Path(folder)
    if not out:
        raise ValueError("--models: no folder given")
    return out


def run_all(sets_dir, models_dir, out_dir, families=("festival", "flite", "espeak"), pocketsphinx: bool = True,
            fa_target: float = 2.0, old_program=None, fa_on: str = "all", tcresnet_dir=None,
            ps: dict | None = None, recorded_fa_target: float | None = None, recorded_voices=None,
            speaker_fa_target: float | None = None, speaker_quantile: float = 0.8, verify: dict | None = None) -> dict:
    """Every fold's test conditions (all SNRs present in sets_dir) through each ES-SSM program, TC-ResNet8
    and pocketsphinx; writes OUT/loso.json, loso.md and kws_det.png.

    models_dir: one folder with <fold>/kws.essm, or several (a list / dict, see model_dirs): the first is the
    primary (res["families"][fold] is its result, as with one folder), the others are scored the same way
    under res["families"][fold]["other_models"][name]; pocketsphinx, the previous model and the gate run once.
    tcresnet_dir: a folder holding <fold>/tcresnet.safetensors (default: the primary folder).
    ps: pocketsphinx options (evaluate_family); ps["cache"] defaults to OUT/ps_cache.
    old_program: the previous keyword program to score beside (a path; None = skip it).
    recorded_fa_target, recorded_voices: evaluate_family's second validation cap (every program).
    speaker_fa_target, speaker_quantile: evaluate_family's per-speaker validation cap (every program).
    OUT/extras_<family>.json (from extras()), when present, supplies the previous model's and the
    gate's numbers instead of recomputing them.
    verify: a second-stage verifier (kws-eval --verify): {"kind": "pocketsphinx", "thresholds": [None or float, ...]
    (default verify.VERIFY_THRESHOLDS), "workers": n, "cache": folder (default OUT/verify_cache)}; every program is
    also scored as the first stage of that cascade, its (first-stage, verifier) threshold pair chosen on validation
    by the same rule (evaluate_cascade), under res["families"][fold]["cascades"][name]."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = model_dirs(models_dir)
    (first, mdir), others = next(iter(dirs.items())), list(dirs.items())[1:]
    ps = dict(ps or {})
    ps.setdefault("cache", out / "ps_cache")
    res = {"families": {}, "fa_target": fa_target, "fa_on": fa_on, "models": list(dirs)}
    if speaker_fa_target is not None:
        res["speaker_fa_target"], res["speaker_quantile"] = speaker_fa_target, speaker_quantile
    for fam in families:
        p = mdir / fam / "kws.essm"
        if not p.is_file() or not list(Path(sets_dir).glob(f"test_{fam}_kw_*.npz")):
            log.warning("fold %s: no program %s or no sets: skipped", fam, p)
            continue
        ex = out / f"extras_{fam}.json"
        cached = json.loads(ex.read_text()) if ex.is_file() else None
        r = evaluate_family(fam, sets_dir, p, False if (cached or not old_program) else old_program,
                            fa_target, pocketsphinx, gate=cached is None, fa_on=fa_on, ps=ps,
                            recorded_fa_target=recorded_fa_target, recorded_voices=recorded_voices,
                            speaker_fa_target=speaker_fa_target, speaker_quantile=speaker_quantile)
        r["name"] = first
        res["families"][fam] = r
        if cached:
            for name, o in cached.get("old", {}).items():
                if name in r["conditions"]:
                    r["conditions"][name]["old"] = o
            if "gate" in cached:
                r["gate"] = cached["gate"]
        for name, d in others:
            q = d / fam / "kws.essm"
            if not q.is_file():
                log.warning("fold %s: model %s has no program %s: skipped", fam, name, q)
                continue
            o = evaluate_family(fam, sets_dir, q, False, fa_target, False, gate=False, fa_on=fa_on,
                                recorded_fa_target=recorded_fa_target, recorded_voices=recorded_voices,
                                speaker_fa_target=speaker_fa_target, speaker_quantile=speaker_quantile)
            o["name"] = name
            r.setdefault("other_models", {})[name] = o
        if verify:
            vcfg = {"kind": verify.get("kind", "pocketsphinx")}
            vcache = verify.get("cache") or out / "verify_cache"
            for name, d in dirs.items():
                q = d / fam / "kws.essm"
                if q.is_file():
                    r.setdefault("cascades", {})[name] = evaluate_cascade(
                        fam, sets_dir, q, vcfg, fa_target, fa_on,
                        cascade_pairs(v_grid=verify.get("thresholds")), verify.get("workers", 2), vcache,
                        recorded_fa_target=recorded_fa_target, recorded_voices=recorded_voices)
                    _write(out / "loso.json", json.dumps(res, indent=1, default=float))
        tdir = Path(tcresnet_dir) / fam if tcresnet_dir else mdir / fam
        if (tdir / "tcresnet.safetensors").is_file():
            try:
                from .baseline_stream import evaluate_tcresnet
                from .spotter import KeywordSpotter
                r["tcresnet"] = evaluate_tcresnet(fam, sets_dir, tdir, KeywordSpotter(p), fa_target, fa_on=fa_on)
                r["tcresnet"]["dir"] = str(tdir)
            except ImportError as e:                     # torch is the [train] extra
                log.warning("TC-ResNet8 baseline skipped: %s", e)
        elif tcresnet_dir:
            log.warning("fold %s: no TC-ResNet8 in %s", fam, tdir)
        _write(out / "loso.json", json.dumps(res, indent=1, default=float))
    if not res["families"]:
        return res
    res["costs"] = frontend_costs()
    _write(out / "loso.json", json.dumps(res, indent=1, default=float))
    plot_det(res, out / "kws_det.png")
    _write(out / "loso.md", markdown(res))
    return res


# ----------------------------------------------------------------------------- report
def _pct(x):
    return f"{100 * x:.0f}%"


def _models_of(r: dict) -> list[dict]:
    """The ES-SSM results of one fold: the primary, then the other models of the run."""
    return [r] + list(r.get("other_models", {}).values())


def _rule_text(r: dict, fa_target) -> str:
    v = r["val_choice"]
    rates = (f"; keyword-free {v['neg_fa_per_hour']:.1f} FA/h, inside keyword streams (confusions) "
             f"{v['kw_fa_per_hour']:.1f} FA/h" if "neg_fa_per_hour" in v else "")
    if "guard_fa_per_hour" in v:
        who = f" ({r['recorded_voices']})" if r.get("recorded_voices") else ""
        rates += (f"; recorded validation speakers'{who} keyword-free speech {v['guard_fa_per_hour']:.1f} FA/h "
                  f"(cap {v['guard_cap']:g}, {r.get('val_recorded_neg_hours', 0):.2f} h)")
    if "speaker_q_fa_per_hour" in v:
        n = len(v["speaker_fa_per_hour"])
        rates += (f"; per-speaker cap: the {v['speaker_quantile']:g}-quantile (the ceil(q*n)-th smallest) of {n} "
                  f"validation speakers' keyword-free FA/h {v['speaker_q_fa_per_hour']:.1f} (cap {v['speaker_cap']:g}; "
                  + ", ".join(f"{k} {x:.1f}" for k, x in sorted(v["speaker_fa_per_hour"].items(), key=lambda kv: -kv[1]))
                  + ")")
    return (f"threshold {r['threshold']} chosen on validation voices, <= {fa_target:g} FA/h: "
            f"{100 * v['hit_rate']:.0f}% at {v['fa_per_hour']:.1f} FA/h over {r['val_hours']:.2f} h{rates}")


def _fa(n, hours) -> str:
    return f"{n / max(hours, 1e-9):.1f} ({n} in {hours:.2f} h)"


def _speaker_lines(m: dict, names) -> list[str]:
    """The per-held-out-speaker read-out of one program (conditions with more than one speaker group)."""
    out = []
    for n in names:
        by = m["conditions"].get(n, {}).get("K32_speakers")
        if not by:
            continue
        who = f"{m.get('name')}, " if m.get("name") else ""
        out += [f"Per held-out speaker, {n} ({who}threshold {m['threshold']}, K=32; a '+' key is a stream that pools "
                "speakers and cannot be split):", "",
                "| speaker | keywords found | FA/h keyword-free (events in hours) | confusions in keyword streams |",
                "|---|---|---|---|"]
        out += [f"| {k} | {_pct(d['hit_rate'])} ({d['hits']}/{d['keywords']}) | {_fa(d['fa_neg'], d['neg_hours'])} | "
                f"{d['fa_in_kw_stream']} |" for k, d in by.items()]
        t = m["conditions"][n]["K32"]
        out += [f"| all (pooled) | {_pct(t['hit_rate'])} ({t['hits']}/{t['keywords']}) | {_fa(t['fa_neg'], t['neg_hours'])} "
                f"| {t['fa_in_kw_stream']} |", ""]
    return out


def markdown(res: dict) -> str:
    lines = []
    fa_target = res.get("fa_target", 2.0)
    for fam, r in res["families"].items():
        cs = r["conditions"]
        names = list(cs)
        models = _models_of(r)
        single = len(models) == 1
        rule = ("false accepts counted on keyword-free validation speech only" if r.get("fa_on") == "neg" else
                "false accepts counted over validation keyword + keyword-free streams")
        if single:
            head = (f"#### Held out: {fam} (threshold {r['threshold']} chosen on validation voices, {rule}, "
                    + _rule_text(r, fa_target).split(", ", 1)[1] + ")")
        else:
            head = (f"#### Held out: {fam} (thresholds chosen on validation voices, {rule}; " +
                    "; ".join(f"{m.get('name')}: {_rule_text(m, fa_target)}" for m in models) + ")")
        lines += [head, "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

        def row(label, f, conds=None):
            conds = cs if conds is None else conds
            return f"| {label} | " + " | ".join(f(conds[n]) if n in conds else "not run" for n in names) + " |"

        def det(c, K, cap):
            kw, ng = c[f"K{K}_kw_curve"], c[f"K{K}_neg_curve"]
            if not ng:
                return "n/a"
            return _pct(det_point(kw, ng, cap)["hit_rate"])

        def same_fa(c, cap):
            if not c["K32_neg_curve"] or not c["K4_neg_curve"]:
                return "n/a"
            a, b = (det_point(c[f"K{K}_kw_curve"], c[f"K{K}_neg_curve"], cap)["hits"] for K in (4, 32))
            return f"{100 * a / b:.0f}%" if b else "n/a"

        for m in models:
            mc = m["conditions"]
            lab = "ES-SSM" if single else f"ES-SSM {m.get('name')} (threshold {m['threshold']})"
            pre = "" if single else f"{m.get('name')}: "
            lines.append(row(f"{lab} K=32: keywords found",
                             lambda c: f"{_pct(c['K32']['hit_rate'])} ({c['K32']['hits']}/{c['K32']['keywords']})", mc))
            lines.append(row(f"{lab} K=32: FA/h keyword-free (hours)",
                             lambda c: _fa(c['K32']['fa_neg'], c['K32']['neg_hours']), mc))
            lines.append(row(f"{lab} K=32: false accepts inside keyword streams (confusions), per hour of them",
                             lambda c: f"{c['K32']['fa_in_kw_stream'] / max(c['K32']['kw_hours'], 1e-9):.1f} "
                                       f"({c['K32']['fa_in_kw_stream']})", mc))
            lines.append(row(f"{lab} K=4: keywords found", (lambda c: f"{_pct(c['K4']['hit_rate'])}") if single else
                             (lambda c: f"{_pct(c['K4']['hit_rate'])} ({c['K4']['hits']}/{c['K4']['keywords']})"), mc))
            lines.append(row(f"{lab} K=4: FA/h keyword-free", (lambda c: f"{c['K4']['fa_per_hour_neg']:.1f}") if single
                             else (lambda c: _fa(c['K4']['fa_neg'], c['K4']['neg_hours'])), mc))
            lines.append(row(f"{pre}DET read-out, K=32 (test curve, reporting only): found at <= 2 / 10 / 50 FA/h",
                             lambda c: " / ".join(det(c, 32, x) for x in (2, 10, 50)), mc))
            lines.append(row(f"{pre}DET read-out, K=4: found at <= 2 / 10 / 50 FA/h",
                             lambda c: " / ".join(det(c, 4, x) for x in (2, 10, 50)), mc))
            lines.append(row(f"{pre}K=4 / K=32 hits, same threshold",
                             lambda c: f"{100 * c['K4']['hits'] / max(1, c['K32']['hits']):.0f}%", mc))
            lines.append(row(f"{pre}K=4 / K=32 hits at the same FA/h (<= 2 / 10 / 50, each K at its own threshold; "
                             "finer grid and intervals: diagnose det-k)",
                             lambda c: " / ".join(same_fa(c, x) for x in (2, 10, 50)), mc))
        if any("pocketsphinx" in cs[n] for n in names):
            pth = r["pocketsphinx_threshold"]
            how = ("given by --ps-threshold, chosen outside this run" if r.get("pocketsphinx_rule") == "given" else
                   "chosen on the clean validation sets" + (f" cut to {r['pocketsphinx_val']['limit_s']:g} s each"
                                                            if isinstance(r.get("pocketsphinx_val"), dict)
                                                            and r["pocketsphinx_val"].get("limit_s") else ""))
            ns = r.get("pocketsphinx_neg_s", PEER_NEG_S)
            span = "all of it" if not ns else f"first {ns:g} s of each set"
            lines.append(row(f"pocketsphinx (kws threshold {pth:g}, {how}): found / FA/h keyword-free ({span})",
                             lambda c: (f"{_pct(c['pocketsphinx']['kw']['hit_rate'])} ({c['pocketsphinx']['kw']['hits']}/"
                                        f"{c['pocketsphinx']['kw']['keywords']}) / " +
                                        (_fa(c['pocketsphinx']['neg']['false_accepts'], c['pocketsphinx']['neg']['hours'])
                                         if c['pocketsphinx']['neg'] else "n/a")) if "pocketsphinx" in c else "not run"))
            lines.append(row("pocketsphinx: false accepts inside keyword streams (confusions)",
                             lambda c: str(c["pocketsphinx"]["kw"]["false_accepts"]) if "pocketsphinx" in c else "not run"))
        if any("old" in cs[n] for n in names):
            lines.append(row("previous bundled model (espeak-ng only, log-mel): found / FA/h",
                             lambda c: (f"{_pct(c['old']['kw']['hit_rate'])} / "
                                        f"{(c['old']['neg'] or {}).get('fa_per_hour', float('nan')):.1f}")
                             if "old" in c else "not run"))
        if "tcresnet" in r:
            tcr = r["tcresnet"]
            tcc = {n: tcr[n] for n in names if n in tcr}
            if "fa_neg" in next(iter(tcc.values()), {}):
                lines.append(row(f"TC-ResNet8 (same frontend and training streams, threshold {tcr['threshold']} by the "
                                 "same rule): keywords found",
                                 lambda c: f"{_pct(c['hit_rate'])} ({c['hits']}/{c['keywords']})", tcc))
                lines.append(row("TC-ResNet8: FA/h keyword-free (hours)",
                                 lambda c: _fa(c['fa_neg'], c['neg_hours']), tcc))
                lines.append(row("TC-ResNet8: false accepts inside keyword streams (confusions)",
                                 lambda c: str(c["fa_in_kw_stream"]), tcc))
                lines.append(row("TC-ResNet8: DET read-out (test curve, reporting only): found at <= 2 / 10 / 50 FA/h",
                                 lambda c: " / ".join(_pct(det_point(c["kw_curve"], c["neg_curve"], x)["hit_rate"])
                                                      for x in (2, 10, 50)) if c.get("neg_curve") else "n/a", tcc))
            elif all(n in tcr for n in names):               # loso.json of an earlier version
                lines.append(f"| TC-ResNet8 (same frontend and data, threshold {tcr['threshold']}): found / FA/h | " +
                             " | ".join(f"{_pct(tcr[n]['hit_rate'])} / {tcr[n]['fa_per_hour_neg']:.1f}" for n in names)
                             + " |")
        for name, cz in r.get("cascades", {}).items():
            v = cz["val_choice"]
            vth = "none (plain first stage)" if cz["vth"] is None else f"{cz['vth']:g}"
            lab = (f"cascade {name} + {cz['verifier']['kind']} verifier (first stage {cz['th1']:g}, verifier {vth}; "
                   f"validation {100 * v['hit_rate']:.0f}% at {v['neg_fa_per_hour']:.1f} FA/h keyword-free)")
            cc = cz["conditions"]
            lines.append(row(f"{lab}: keywords found", lambda c: f"{_pct(c['hit_rate'])} ({c['hits']}/{c['keywords']})", cc))
            lines.append(row(f"cascade {name}: FA/h keyword-free (hours)", lambda c: _fa(c['fa_neg'], c['neg_hours']), cc))
            lines.append(row(f"cascade {name}: false accepts inside keyword streams (confusions)",
                             lambda c: str(c["fa_in_kw_stream"]), cc))
            lines.append(row(f"cascade {name}: DET read-out (test curve over all threshold pairs, reporting only): "
                             "found at <= 2 / 10 / 50 FA/h",
                             lambda c: " / ".join(_pct(det_point(c["kw_curve"], c["neg_curve"], x)["hit_rate"])
                                                  for x in (2, 10, 50)) if c.get("neg_curve") else "n/a", cc))
        lines.append("")
        for name, cz in r.get("cascades", {}).items():
            vc = cz.get("verify_cpu", {})
            if vc.get("n"):
                lines.append(f"Verifier CPU ({name}'s cascade, {vc['n']} windows computed in this run, one thread each, "
                             f"shared loaded machine): {vc['mean_ms']:.1f} ms mean, {vc['median_ms']:.1f} median, "
                             f"{vc['p90_ms']:.1f} p90 per verification")
        if r.get("cascades"):
            lines.append("")
        for m in models:
            lines += _speaker_lines(m, names)
    for fam, r in res["families"].items():
        g = r.get("gate")
        if g:
            lines.append(f"Level gate on the embedding network ({fam}, clean keyword stream + 10 min of keyword-free "
                         "speech, whole pipeline): " + "; ".join(
                             f"{k}: {v['hits']}/{v['keywords']} hits, {v['false_accepts']} false accepts, network run on "
                             f"{100 * v['embedding_share']:.0f}% of the steps, {v['cpu_ms_per_step']:.2f} ms CPU per step"
                             for k, v in g.items()))
            lines.append("")
    if "costs" in res:
        lines.append("Frontend CPU per 80 ms hop (one thread, shared loaded machine): " +
                     ", ".join(f"{k}: {v:.2f} ms" for k, v in res["costs"].items()))
    return "\n".join(lines)


COND_COLORS = {"clean": "tab:blue", "20dB": "tab:green", "10dB": "tab:orange", "5dB": "tab:red"}
MODEL_COLORS = ("tab:blue", "tab:purple", "tab:olive", "tab:cyan")


def plot_det(res: dict, path) -> None:
    """One panel per (fold, test condition): each ES-SSM program's DET curve at K = 32 (solid) and K = 4
    (dashed) with its validation-threshold point (circle), TC-ResNet8's curve (dotted) and point (square),
    pocketsphinx at its threshold (cross), the previous model (diamond). 0 FA/h is drawn at 0.1."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    fams = list(res["families"])
    if not fams:
        return
    ncond = max(len(res["families"][f]["conditions"]) for f in fams)
    ncol = min(max(ncond, 1), 2)                           # two panels a row, a fold's rows together
    nrow = -(-max(ncond, 1) // ncol)
    fig, axes = plt.subplots(nrow * len(fams), ncol, figsize=(4.6 * ncol, 3.5 * nrow * len(fams)), squeeze=False)

    def fa_of(rows):
        return np.maximum([b["false_accepts"] / max(b["hours"], 1e-9) for b in rows], 0.1)

    for i, fam in enumerate(fams):
        r = res["families"][fam]
        names = list(r["conditions"])
        for j, ax in enumerate(axes[i * nrow:(i + 1) * nrow].ravel()):
            if j >= len(names):
                ax.axis("off")
                continue
            name = names[j]
            for m, color in zip(_models_of(r), MODEL_COLORS):
                c = m["conditions"].get(name)
                if not c:
                    continue
                lab = m.get("name") or "ES-SSM"
                for K, ls in ((32, "-"), (4, "--")):
                    kw, ng = c[f"K{K}_kw_curve"], c[f"K{K}_neg_curve"]
                    if ng:
                        ax.plot(fa_of(ng), [100 * a["hit_rate"] for a in kw], ls, color=color, lw=1,
                                label=f"{lab} K={K}")
                if c["K32"]["neg_hours"]:
                    ax.plot([max(c["K32"]["fa_per_hour_neg"], 0.1)], [100 * c["K32"]["hit_rate"]], "o", color=color,
                            ms=5, label=f"{lab} K=32 at its threshold")
            for (cname, cz), color in zip(r.get("cascades", {}).items(), MODEL_COLORS):
                c = cz["conditions"].get(name)
                if not c or not c.get("neg_curve"):
                    continue
                fa, hr = cascade_frontier(c["kw_curve"], c["neg_curve"])
                ax.step(np.maximum(fa, 0.1), 100 * hr, "-.", where="post", color=color, lw=1,
                        label=f"cascade {cname} (best pair per FA/h)")
                if c["neg_hours"]:
                    ax.plot([max(c["fa_per_hour_neg"], 0.1)], [100 * c["hit_rate"]], "^", color=color, ms=6,
                            label=f"cascade {cname} at its validation pair")
            t = r.get("tcresnet", {}).get(name)
            if t and t.get("neg_curve"):
                ax.plot(fa_of(t["neg_curve"]), [100 * a["hit_rate"] for a in t["kw_curve"]], ":", color="0.2", lw=1,
                        label="TC-ResNet8")
                ax.plot([max(t["fa_per_hour_neg"], 0.1)], [100 * t["hit_rate"]], "s", color="0.2", ms=5,
                        label="TC-ResNet8 at its threshold")
            c = r["conditions"][name]
            if c.get("pocketsphinx") and c["pocketsphinx"]["neg"]:
                ax.plot([max(c["pocketsphinx"]["neg"]["fa_per_hour"], 0.1)], [100 * c["pocketsphinx"]["kw"]["hit_rate"]],
                        "x", ms=8, color="tab:red", label="pocketsphinx at its threshold")
            if "old" in c and c["old"]["neg"]:
                ax.plot([max(c["old"]["neg"]["fa_per_hour"], 0.1)], [100 * c["old"]["kw"]["hit_rate"]], "D",
                        color="0.5", label="previous model")
            ax.axvline(2, color="0.5", lw=0.7)
            ax.axhline(90, color="0.7", lw=0.5)
            ax.set_xscale("log")
            ax.set_xlabel("false accepts per hour (keyword-free speech)", fontsize=7)
            ax.set_ylabel("keywords found (%)", fontsize=7)
            ax.set_title(f"held out: {fam.split(L.V.VAL_SEP)[0]}{' (validation ~...)' if L.V.VAL_SEP in fam else ''}, {name}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.legend(fontsize=5)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def install_bundle(models_dir, family: str, banks_dir, seconds: float = 40.0) -> dict:
    """Bundle the fold's program (with its validation threshold) as essm_stream/assets/kws_default.essm
    and rebuild the demo recording from that fold's held-out voices (its eval banks)."""
    import shutil

    from . import voices as V
    from .recording import ASSET, make_bundle_from_items
    from .spotter import bundled_program_path

    src = Path(models_dir) / family / "kws.essm"
    shutil.copyfile(src, bundled_program_path())
    items = []
    for v in V.fold(family)["test"]:
        f = Path(banks_dir) / "eval" / f"{v.replace(':', '_', 1)}.npz"
        if f.is_file():
            items += [j for j in V.load_bank(f) if j.get("label")]
    info = make_bundle_from_items(items, ASSET, seconds=seconds)
    info["program"] = str(bundled_program_path())
    info["program_bytes"] = bundled_program_path().stat().st_size
    return info


def gate_effect(program_path, sets: list[dict], margin_db: float = 6.0, hang_s: float = 1.0,
                limit_s: float = 600.0) -> dict:
    """The whole pipeline (frontend + engine + detector) on PCM with and without the frontend's level
    gate: hits, false accepts, share of steps that ran the embedding network, CPU per step (thread time)."""
    from ..program import StreamProgram
    from .evaluate import run_spotter
    from .spotter import KeywordSpotter

    out = {}
    for name, gate in (("ungated", None), ("gated", {"margin_db": margin_db, "hang_s": hang_s})):
        prog = StreamProgram.load(program_path)
        fe = dict(prog.frontend)
        fe.pop("gate", None)
        if gate:
            fe["gate"] = gate
        prog.set_frontend(fe)
        sp = KeywordSpotter(prog)
        h = n = fa = steps = run = 0
        cpu = 0.0
        for s in sets:
            pcm = s["pcm"][: int(limit_s * 16000)]
            ev = [e for e in s["events"] if e.end_s <= len(pcm) / 16000]
            t0 = time.thread_time()
            dets = run_spotter(sp, pcm)
            cpu += time.thread_time() - t0
            sc, _ = score_stream(dets, ev, len(pcm) / 16000)
            h, n, fa = h + sc.hits, n + sc.keywords, fa + sc.false_accepts
            steps += sp.hops
            run += sp.frontend.embeddings_run
        out[name] = {"hits": h, "keywords": n, "false_accepts": fa, "steps": steps,
                     "embedding_share": run / max(1, steps), "cpu_ms_per_step": 1e3 * cpu / max(1, steps)}
    return out


# ----------------------------------------------------------------------------- cascade (kws-eval --verify)
CASCADE_TH1 = tuple(t for t in L.THRESHOLDS if t >= 0.5)      # first-stage thresholds the cascade tries


def _verify_job(args):
    cfg, items = args
    from .verify import make_verifier
    v = make_verifier(dict(cfg, threshold=cfg.get("threshold") or -1.0))
    out = []
    for label, t, window in items:
        c0 = time.thread_time()
        s = v.score(window, label)
        out.append((label, t, s, time.thread_time() - c0))
    return out


def _vcache_file(cache_dir, s: dict, cfg: dict):
    if cache_dir is None or not s.get("path"):
        return None
    return Path(cache_dir) / f"{Path(s['path']).stem}__{cfg['kind']}_{cfg['pre_s']:g}_{cfg['post_s']:g}.json"


def verify_scores(s: dict, wanted, cfg: dict, workers: int = 2, cache_dir=None, cpu: list | None = None) -> dict:
    """{(label, time_s): verifier score} for detections `wanted` [(label, time_s)] on set s (its pcm), from the
    cache (one file per set and window) or computed in `workers` processes (in this one when workers <= 1).
    cpu: a list that gets the thread CPU seconds of each computed verification."""
    from ..fileio import atomic_write_bytes
    from .verify import window_bounds
    f = _vcache_file(cache_dir, s, cfg)
    n = len(s["pcm"])
    known = {}
    if f is not None and f.is_file():
        j = json.loads(f.read_text())
        if j.get("samples") == n:
            known = {(a, round(float(b), 4)): float(c) for a, b, c in j["scores"]}
    keys = sorted({(a, round(float(b), 4)) for a, b in wanted})
    todo = [k for k in keys if k not in known]
    if todo:
        items = []
        for a, t in todo:
            lo, hi = window_bounds(t, cfg["pre_s"], cfg["post_s"], 16000, n)
            items.append((a, t, np.asarray(s["pcm"][lo:hi])))
        chunks = [(cfg, items[i:i + 100]) for i in range(0, len(items), 100)]
        if workers <= 1 or len(chunks) == 1:
            outs = [_verify_job(c) for c in chunks]
        else:
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(workers) as ex:
                outs = list(ex.map(_verify_job, chunks))
        for o in outs:
            for a, t, sc, c in o:
                known[(a, t)] = sc
                if cpu is not None:
                    cpu.append(c)
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(f, json.dumps({"set": Path(s["path"]).name, "samples": n, "config": cfg,
                                              "scores": [[a, t, sc] for (a, t), sc in sorted(known.items())]}).encode())
    return {k: known[k] for k in keys}


def cascade_pairs(th1_grid=CASCADE_TH1, v_grid=None) -> list[tuple]:
    """(first-stage threshold, verifier threshold or None) pairs, in row order."""
    from .verify import VERIFY_THRESHOLDS
    return [(float(a), b) for a in th1_grid for b in (VERIFY_THRESHOLDS if v_grid is None else v_grid)]


def cascade_set_rows(prog, spotter, sets, K, cfg: dict, pairs, workers: int = 2, cache_dir=None,
                     cpu: list | None = None) -> list[list[dict]]:
    """Each set's hits / false accepts for every (first-stage threshold, verifier threshold) pair: the first stage's
    detections (loso.fast_replay; its re-arm and refractory run as if every detection were reported), kept when
    the verifier's score on the window around it reaches the verifier threshold (None: all kept). Rows carry
    "threshold" = the pair's index (so pool_rows / pick_threshold / det_point apply) and "th1" / "vth"."""
    th1s = sorted({p[0] for p in pairs})
    per = []
    for s in sets:
        Y = L.engine_outputs(prog, L.normalise(prog, s["F"]), K)
        active = L.vad_active(spotter, s["levels"], s["times"])
        dets = {t: L.fast_replay(spotter, Y, s["levels"], s["times"], t, active) for t in th1s}
        need = any(p[1] is not None for p in pairs)
        sc = verify_scores(s, [(d.label, d.time_s) for ds in dets.values() for d in ds], cfg, workers, cache_dir,
                           cpu) if need else {}
        secs = len(s["pcm"]) / 16000
        rows = []
        for i, (t1, v) in enumerate(pairs):
            kept = [d for d in dets[t1] if v is None or sc[(d.label, round(d.time_s, 4))] >= v]
            r, _ = score_stream(kept, s["events"], secs)
            rows.append({"threshold": float(i), "th1": t1, "vth": v, **r.to_dict()})
        per.append(rows)
    return per


def cascade_frontier(kw_rows, neg_rows) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's DET curve over all its threshold pairs: for each keyword-free FA/h reached, the best hit rate
    of any pair at or below it (a step curve: FA/h ascending, hit rate non-decreasing)."""
    fa = np.array([b["false_accepts"] / max(b["hours"], 1e-9) for b in neg_rows])
    hr = np.array([a["hit_rate"] for a in kw_rows])
    o = np.lexsort((-hr, fa))
    return fa[o], np.maximum.accumulate(hr[o])


def evaluate_cascade(family: str, sets_dir, program_path, cfg: dict, fa_target: float = 10.0, fa_on: str = "neg",
                     pairs=None, workers: int = 2, cache_dir=None, K: int | None = None,
                     recorded_fa_target: float | None = None, recorded_voices=None) -> dict:
    """One program as the first stage of a cascade with the verifier `cfg` (verify.check_verifier_config; its
    threshold is ignored: chosen here): the (first-stage, verifier) threshold pair is chosen on the fold's
    validation sets by loso.pick_threshold (best validation hit rate at <= fa_target FA/h, fa_on as for the plain
    program), then every test condition is read at that pair (and over all pairs: the cascade's DET curve).
    recorded_fa_target / recorded_voices: the second validation cap of evaluate_family (loso.pick_threshold's guard on
    the recorded validation speakers' keyword-free speech), applied to the cascade's pairs the same way.
    The program file is not changed. CPU seconds per verification are measured (thread time, loaded machine)."""
    from ..program import StreamProgram
    from .spotter import KeywordSpotter
    from .verify import check_verifier_config
    cfg = check_verifier_config(dict(cfg, threshold=cfg.get("threshold") if cfg.get("threshold") is not None else -1.0))
    pairs = cascade_pairs() if pairs is None else list(pairs)
    idx = [float(i) for i in range(len(pairs))]
    prog = StreamProgram.load(program_path)
    sp = KeywordSpotter(prog)
    K = prog.k_max if K is None else K
    sets_dir = Path(sets_dir)
    cpu: list = []
    val = {k: [L.load_set(p) for p in sorted(sets_dir.glob(f"val_{family}_{k}_*.npz"))] for k in ("kw", "neg")}
    vk = pool_rows(cascade_set_rows(prog, sp, val["kw"], K, cfg, pairs, workers, cache_dir, cpu), idx)
    vn_per = cascade_set_rows(prog, sp, val["neg"], K, cfg, pairs, workers, cache_dir, cpu)
    vn = pool_rows(vn_per, idx)
    guard = None
    if recorded_fa_target is not None:
        spk = L.recorded_speakers(recorded_voices)
        rec = [r for x, r in zip(val["neg"], vn_per) if L.is_recorded(x["meta"].get("voices"), spk)]
        if not rec:
            raise FileNotFoundError(f"cascade: no keyword-free validation set of recorded voices (val_{family}_neg_*) "
                                    f"in {sets_dir}")
        guard = pool_rows(rec, idx)
    del val
    choice = L.pick_threshold(vk, vn, fa_target, fa_on, guard, recorded_fa_target)
    i = int(choice["threshold"])
    t1, vth = pairs[i]
    res = {"program": str(program_path), "verifier": dict(cfg, threshold=vth), "th1": t1, "vth": vth,
           "pairs": [list(p) for p in pairs], "val_choice": choice, "fa_on": fa_on, "fa_target": fa_target,
           "val_kw_curve": vk, "val_neg_curve": vn, "conditions": {}}
    for snr in L.SNRS:
        name = L.snr_name(snr)
        kw, neg = L.load_condition(sets_dir, "test", family, name)
        if not kw:
            continue
        rk = pool_rows(cascade_set_rows(prog, sp, kw, K, cfg, pairs, workers, cache_dir, cpu), idx)
        rn = pool_rows(cascade_set_rows(prog, sp, neg, K, cfg, pairs, workers, cache_dir, cpu), idx) if neg else None
        a, b = rk[i], (rn[i] if rn else {"false_accepts": 0, "hours": 0.0})
        res["conditions"][name] = {"hits": a["hits"], "keywords": a["keywords"], "hit_rate": a["hit_rate"],
                                   "fa_neg": b["false_accepts"], "neg_hours": b["hours"],
                                   "fa_per_hour_neg": b["false_accepts"] / max(b["hours"], 1e-9),
                                   "fa_in_kw_stream": a["false_accepts"], "kw_hours": a["hours"],
                                   "kw_curve": rk, "neg_curve": rn}
        log.info("cascade %s %s: %d/%d at %.1f FA/h (th1 %s, verifier %s)", Path(program_path).parent.name, name,
                 a["hits"], a["keywords"], res["conditions"][name]["fa_per_hour_neg"], t1, vth)
    c = np.array(cpu) if cpu else np.zeros(0)
    res["verify_cpu"] = {"n": int(len(c)), "mean_ms": float(1e3 * c.mean()) if len(c) else None,
                         "median_ms": float(1e3 * np.median(c)) if len(c) else None,
                         "p90_ms": float(1e3 * np.percentile(c, 90)) if len(c) else None}
    return res
