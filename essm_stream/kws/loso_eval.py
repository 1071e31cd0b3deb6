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
    pcm, events, th = args
    sc, _ = score_stream(pocketsphinx_detections(pcm, th), events, len(pcm) / 16000)
    return sc


def ps_sweep(sets: list[dict], thresholds=PS_THRESHOLDS, workers: int = 3, limit_s: float | None = None) -> list[dict]:
    """Pooled pocketsphinx hits / false accepts per threshold (sets x thresholds in `workers` processes;
    each set cut to its first limit_s seconds when given)."""
    from concurrent.futures import ProcessPoolExecutor

    cut = []
    for s in sets:
        n = len(s["pcm"]) if limit_s is None else min(len(s["pcm"]), int(limit_s * 16000))
        cut.append((s["pcm"][:n], [e for e in s["events"] if e.end_s <= n / 16000]))
    jobs = [(pcm, ev, th) for th in thresholds for pcm, ev in cut]
    with ProcessPoolExecutor(workers) as ex:
        scores = list(ex.map(_ps_job, jobs))
    rows = []
    for i, th in enumerate(thresholds):
        sc = scores[i * len(cut):(i + 1) * len(cut)]
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
def essm_rows(prog, spotter, sets, K, thresholds=L.THRESHOLDS) -> list[dict]:
    """Pooled (over the sets) hits / false accepts per threshold at budget K."""
    per = []
    for s in sets:
        Y = L.engine_outputs(prog, L.normalise(prog, s["F"]), K)
        per.append(L.sweep_thresholds(spotter, Y, s["levels"], s["times"], s["events"], len(s["pcm"]) / 16000,
                                      thresholds))
    rows = []
    for i, th in enumerate(thresholds):
        h = sum(p[i]["hits"] for p in per)
        n = sum(p[i]["keywords"] for p in per)
        fa = sum(p[i]["false_accepts"] for p in per)
        hours = sum(p[i]["hours"] for p in per)
        rows.append({"threshold": float(th), "hits": h, "keywords": n, "false_accepts": fa, "hours": hours,
                     "hit_rate": h / max(1, n), "fa_per_hour": fa / max(hours, 1e-9)})
    return rows


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
                    pocketsphinx: bool = True, gate: bool = True, fa_on: str = "all",
                    recorded_fa_target: float | None = None) -> dict:
    from ..program import StreamProgram
    from .spotter import KeywordSpotter

    sets_dir = Path(sets_dir)
    prog = StreamProgram.load(program_path)
    sp = KeywordSpotter(prog)
    t0 = time.perf_counter()
    val = {k: [L.load_set(p) for p in sorted(sets_dir.glob(f"val_{family}_{k}_*.npz"))] for k in ("kw", "neg")}
    vk, vn = essm_rows(prog, sp, val["kw"], prog.k_max), essm_rows(prog, sp, val["neg"], prog.k_max)
    guard = None
    if recorded_fa_target is not None:          # a second cap on the recorded validation speakers' speech alone
        rec = [x for x in val["neg"] if L.is_recorded(x["meta"].get("voices"))]
        if not rec:
            raise FileNotFoundError(f"--recorded-fa-target: no keyword-free validation set of recorded voices "
                                    f"(val_{family}_neg_*) in {sets_dir}")
        guard = essm_rows(prog, sp, rec, prog.k_max)
    choice = L.pick_threshold(vk, vn, fa_target, fa_on, guard, recorded_fa_target)
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
        res["val_recorded_neg_curve"] = guard
    if pocketsphinx:
        clean = {k: [x for x in val[k] if x["meta"].get("snr_db") is None] for k in ("kw", "neg")}
        if fa_on == "neg":
            pk, pn = ps_sweep(clean["kw"]), ps_sweep(clean["neg"])
            res["pocketsphinx_val"] = {"kw": pk, "neg": pn}
            res["pocketsphinx_threshold"] = L.pick_threshold(pk, pn, fa_target, "neg")["threshold"]
        else:
            psv = ps_sweep(clean["kw"] + clean["neg"])
            res["pocketsphinx_val"] = psv
            res["pocketsphinx_threshold"] = pick(psv, fa_target)["threshold"]
    for snr in L.SNRS:
        name = L.snr_name(snr)
        kw, neg = L.load_condition(sets_dir, "test", family, name)
        if not kw:
            continue
        c = {"kw_seconds": sum(len(s["pcm"]) for s in kw) / 16000, "neg_seconds": sum(len(s["pcm"]) for s in neg) / 16000}
        for K in (32, 4):
            rk, rn = essm_rows(prog, sp, kw, K), essm_rows(prog, sp, neg, K) if neg else None
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
            pk, pn = ps_sweep(kw, (pth,))[0], (ps_sweep(neg, (pth,), limit_s=PEER_NEG_S)[0] if neg else None)
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
    Path(out_path).write_text(json.dumps(res, indent=1, default=float))
    return res


def run_all(sets_dir, models_dir, out_dir, families=("festival", "flite", "espeak"), pocketsphinx: bool = True,
            fa_target: float = 2.0, old_program=None, fa_on: str = "all",
            recorded_fa_target: float | None = None) -> dict:
    """old_program: the previous keyword program to score beside (a path; None = skip it).
    OUT/extras_<family>.json (from extras()), when present, supplies the previous model's and the
    gate's numbers instead of recomputing them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = {"families": {}, "fa_target": fa_target, "fa_on": fa_on}
    for fam in families:
        p = Path(models_dir) / fam / "kws.essm"
        if not p.is_file() or not list(Path(sets_dir).glob(f"test_{fam}_kw_*.npz")):
            log.warning("fold %s: no program %s or no sets: skipped", fam, p)
            continue
        ex = out / f"extras_{fam}.json"
        cached = json.loads(ex.read_text()) if ex.is_file() else None
        res["families"][fam] = evaluate_family(fam, sets_dir, p, False if (cached or not old_program) else old_program,
                                               fa_target, pocketsphinx, gate=cached is None, fa_on=fa_on,
                                               recorded_fa_target=recorded_fa_target)
        if cached:
            for name, o in cached.get("old", {}).items():
                if name in res["families"][fam]["conditions"]:
                    res["families"][fam]["conditions"][name]["old"] = o
            if "gate" in cached:
                res["families"][fam]["gate"] = cached["gate"]
        if (Path(models_dir) / fam / "tcresnet.safetensors").is_file():
            try:
                from .baseline_stream import evaluate_tcresnet
                from .spotter import KeywordSpotter
                res["families"][fam]["tcresnet"] = evaluate_tcresnet(fam, sets_dir, Path(models_dir) / fam,
                                                                     KeywordSpotter(p), fa_target)
            except ImportError as e:                     # torch is the [train] extra
                log.warning("TC-ResNet8 baseline skipped: %s", e)
        (out / "loso.json").write_text(json.dumps(res, indent=1, default=float))
    if not res["families"]:
        return res
    res["costs"] = frontend_costs()
    (out / "loso.json").write_text(json.dumps(res, indent=1, default=float))
    plot_det(res, out / "kws_det.png")
    (out / "loso.md").write_text(markdown(res))
    return res


# ----------------------------------------------------------------------------- report
def _pct(x):
    return f"{100 * x:.0f}%"


def markdown(res: dict) -> str:
    lines = []
    for fam, r in res["families"].items():
        cs = r["conditions"]
        names = list(cs)
        v = r["val_choice"]
        rule = ("false accepts counted on keyword-free validation speech only" if r.get("fa_on") == "neg" else
                "false accepts counted over validation keyword + keyword-free streams")
        rates = (f"; keyword-free {v['neg_fa_per_hour']:.1f} FA/h, inside keyword streams (confusions) "
                 f"{v['kw_fa_per_hour']:.1f} FA/h" if "neg_fa_per_hour" in v else "")
        if "guard_fa_per_hour" in v:
            rates += (f"; recorded validation speakers' keyword-free speech {v['guard_fa_per_hour']:.1f} FA/h "
                      f"(cap {v['guard_cap']:g}, {r.get('val_recorded_neg_hours', 0):.2f} h)")
        lines += [f"#### Held out: {fam} (threshold {r['threshold']} chosen on validation voices, {rule}, "
                  f"<= {res.get('fa_target', 2.0):g} FA/h: {100 * v['hit_rate']:.0f}% at {v['fa_per_hour']:.1f} "
                  f"FA/h over {r['val_hours']:.2f} h{rates})", "",
                  "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

        def row(label, f):
            return f"| {label} | " + " | ".join(f(cs[n]) for n in names) + " |"

        lines.append(row("ES-SSM K=32: keywords found", lambda c: f"{_pct(c['K32']['hit_rate'])} ({c['K32']['hits']}/{c['K32']['keywords']})"))
        lines.append(row("ES-SSM K=32: FA/h keyword-free (hours)", lambda c: f"{c['K32']['fa_per_hour_neg']:.1f} ({c['K32']['fa_neg']} in {c['K32']['neg_hours']:.2f} h)"))
        lines.append(row("ES-SSM K=32: false accepts inside keyword streams (confusions), per hour of them",
                         lambda c: f"{c['K32']['fa_in_kw_stream'] / max(c['K32']['kw_hours'], 1e-9):.1f} "
                                   f"({c['K32']['fa_in_kw_stream']})"))
        lines.append(row("ES-SSM K=4: keywords found", lambda c: f"{_pct(c['K4']['hit_rate'])}"))
        lines.append(row("ES-SSM K=4: FA/h keyword-free", lambda c: f"{c['K4']['fa_per_hour_neg']:.1f}"))
        def det(c, K, cap):
            kw, ng = c[f"K{K}_kw_curve"], c[f"K{K}_neg_curve"]
            if not ng:
                return "n/a"
            return _pct(det_point(kw, ng, cap)["hit_rate"])

        lines.append(row("DET read-out, K=32 (test curve, reporting only): found at <= 2 / 10 / 50 FA/h",
                         lambda c: " / ".join(det(c, 32, x) for x in (2, 10, 50))))
        lines.append(row("DET read-out, K=4: found at <= 2 / 10 / 50 FA/h",
                         lambda c: " / ".join(det(c, 4, x) for x in (2, 10, 50))))
        lines.append(row("K=4 / K=32 hits, same threshold", lambda c: f"{100 * c['K4']['hits'] / max(1, c['K32']['hits']):.0f}%"))

        def same_fa(c, cap):
            if not c["K32_neg_curve"] or not c["K4_neg_curve"]:
                return "n/a"
            a, b = (det_point(c[f"K{K}_kw_curve"], c[f"K{K}_neg_curve"], cap)["hits"] for K in (4, 32))
            return f"{100 * a / b:.0f}%" if b else "n/a"

        lines.append(row("K=4 / K=32 hits at the same FA/h (<= 2 / 10 / 50, each K at its own threshold; "
                         "finer grid and intervals: diagnose det-k)",
                         lambda c: " / ".join(same_fa(c, x) for x in (2, 10, 50))))
        if all("pocketsphinx" in cs[n] for n in names):
            lines.append(row(f"pocketsphinx (kws threshold {r['pocketsphinx_threshold']:g}): found / FA/h",
                             lambda c: f"{_pct(c['pocketsphinx']['kw']['hit_rate'])} / "
                                       f"{(c['pocketsphinx']['neg'] or {}).get('fa_per_hour', float('nan')):.1f}"))
        if any("old" in cs[n] for n in names):
            lines.append(row("previous bundled model (espeak-ng only, log-mel): found / FA/h",
                             lambda c: (f"{_pct(c['old']['kw']['hit_rate'])} / "
                                        f"{(c['old']['neg'] or {}).get('fa_per_hour', float('nan')):.1f}")
                             if "old" in c else "not run"))
        if "tcresnet" in r and all(n in r["tcresnet"] for n in names):
            tcr = r["tcresnet"]
            lines.append(f"| TC-ResNet8 (same frontend and data, threshold {tcr['threshold']}): found / FA/h | " +
                         " | ".join(f"{_pct(tcr[n]['hit_rate'])} / {tcr[n]['fa_per_hour_neg']:.1f}" for n in names) + " |")
        lines.append("")
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


def plot_det(res: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    fams = list(res["families"])
    if not fams:
        return
    fig, axes = plt.subplots(1, len(fams), figsize=(5 * len(fams), 4), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        cs = res["families"][fam]["conditions"]
        for name, color in (("clean", "tab:blue"), ("10dB", "tab:orange")):
            if name not in cs:
                continue
            c = cs[name]
            for K, ls in ((32, "-"), (4, "--")):
                kw, ng = c[f"K{K}_kw_curve"], c[f"K{K}_neg_curve"]
                if not ng:
                    continue
                fa = [b["false_accepts"] / max(b["hours"], 1e-9) for b in ng]
                ax.plot(np.maximum(fa, 0.1), [100 * a["hit_rate"] for a in kw], ls, color=color, marker=".",
                        label=f"ES-SSM K={K} {name}")
            if c.get("pocketsphinx") and c["pocketsphinx"]["neg"]:
                ax.plot([max(c["pocketsphinx"]["neg"]["fa_per_hour"], 0.1)], [100 * c["pocketsphinx"]["kw"]["hit_rate"]],
                        "x", ms=9, color=color, label=f"pocketsphinx {name} (validation threshold)")
            if "old" in c and c["old"]["neg"]:
                ax.plot([max(c["old"]["neg"]["fa_per_hour"], 0.1)], [100 * c["old"]["kw"]["hit_rate"]], "s",
                        color=color, label=f"previous model {name}")
        ax.axvline(2, color="0.5", lw=0.7)
        ax.axhline(90, color="0.7", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("false accepts per hour (keyword-free speech)")
        ax.set_ylabel("keywords found (%)")
        ax.set_title(f"held-out family: {fam}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


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
