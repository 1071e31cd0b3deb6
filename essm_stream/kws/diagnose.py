"""Where does a keyword model lose its hits: capacity / steps, or the voices it was trained on? (needs torch)

    python -m essm_stream.kws.diagnose streams MODEL_DIR FEATS_DIR [--test-feats DIR] [--test-family festival] [--K 32]
    python -m essm_stream.kws.diagnose perkw-test PROGRAM... --sets SETS --test-family FOLD   (hits per keyword)
    python -m essm_stream.kws.diagnose val PROGRAM.essm [PROGRAM.essm ...] [--sets runs/kws2/sets] [--test]
    python -m essm_stream.kws.diagnose perkw PROGRAM.essm [--sets runs/kws2/sets]
    python -m essm_stream.kws.diagnose cost PROGRAM.essm [PROGRAM.essm ...]
    python -m essm_stream.kws.diagnose det-k PROGRAM... --sets SETS --test-family FOLD [--K 32,8,4] [--caps 2,10,50]
        [--fine] [--boot 2000] [--name NAME ...] [--json OUT.json] [--plot OUT.png]

`streams`: the model (MODEL_DIR/last.safetensors + norm.json) over the rendered feature streams of the
fold (render.py), grouped by who speaks: a seeded sample of its training streams per family, its
validation voices per family and the held-out family's voices (their rendered streams exist in the
features directory even though training never reads them). Per group: the share of keywords whose
posterior reaches p at some step of its end window (median of that maximum, and the share where the
keyword is the arg-max at some step), and hits / false accepts per hour of the training-time detector
(streamtrain.simple_detect) at a few thresholds. Training high + held-out low: the data (voices) limit;
training low too: the model / steps limit. The rendered streams are dense (near-misses, sentences,
noise), so their false accepts per hour are not comparable with kws-eval's keyword-free streams.

`val`: a program's hits at <= 2 / 10 / 50 false accepts/h on the fold's loso *validation* sets (the
spotter's rule, as kws-eval picks its threshold), at K = 32 and 4; with --test also the held-out clean
test curve read the same way (reporting only: choices are made on validation).

`perkw`: would one threshold per keyword (issue 9 item 6) help? An estimate without changing the
spotter: the global-threshold sweep's detections are split by keyword (hits and false accepts per
keyword and threshold; the rule couples keywords only through the 1 s refractory), thresholds per
keyword are chosen greedily on validation (most hits per false accept first) under a false-accept
budget, and the same per-keyword thresholds are read on the held-out clean streams.

`det-k`: the elastic target as the issue states it ("K = 4 keeps >= 98% of K = 32's hits at the same
false-accept rate"): each budget's held-out DET curve (one engine pass per K, every threshold) read at
<= 2 / 10 / 50 false accepts per hour of keyword-free speech, each K at its own best threshold, and the
ratio of hits to K = K̄'s at each cap (kws-eval's "same threshold" row compares operating points instead);
--boot N adds a paired keyword-bootstrap 90% interval of each ratio at the read-out thresholds.

`cost`: the engine's CPU per model step (StreamEngine.step on one frame, float32, batch 1, median of
n calls after a warm-up) at K = 4 and K = K̄, and the parameter count: the model-size axis of the
accuracy tables (the speech-embedding frontend's cost per hop is in kws-eval's output).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from . import voices as V

log = logging.getLogger(__name__)
CAPS = (2.0, 10.0, 50.0)


def fine_thresholds() -> tuple[float, ...]:
    """kws-eval's grid (loso.THRESHOLDS) plus steps of 0.005 from 0.3 to 0.99 and 24 log-spaced points up to
    1 - 5e-5: each budget's DET curve read between the coarse grid's points (0.05 apart below 0.9)."""
    from . import loso as L
    extra = np.concatenate([np.arange(0.3, 0.99, 0.005), 1 - np.logspace(-2, np.log10(5e-5), 24)])
    return tuple(sorted(set(np.round(np.concatenate([L.THRESHOLDS, extra]), 6).tolist())))


def stream_groups(feats_dir, family: str, n_train: int = 40, seed: int = 0, test_feats=None) -> dict[str, list[dict]]:
    """{group name: streams} for the fold of `family`: train-<family> (a seeded sample of n_train streams
    per training family), val-<family>, test-<voice> (from test_feats when given: a features directory
    made for one fold's training need not hold the held-out voices)."""
    from .streamtrain import load_streams

    fold = V.fold(family)
    fdir = Path(feats_dir) / "embedding"
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict]] = {}
    tr = load_streams(fdir, fold["train"])
    for fam in sorted({s["voice"].split(":")[0] for s in tr}):
        ss = [s for s in tr if s["voice"].split(":")[0] == fam]
        if len(ss) > n_train:
            ss = [ss[i] for i in sorted(rng.choice(len(ss), n_train, replace=False))]
        out[f"train-{fam}"] = ss
    va = load_streams(fdir, fold["val"])
    for fam in sorted({s["voice"].split(":")[0] for s in va}):
        out[f"val-{fam}"] = [s for s in va if s["voice"].split(":")[0] == fam]
    te = load_streams(Path(test_feats or feats_dir) / "embedding", fold["test"])
    for v in sorted({s["voice"] for s in te}):
        out[f"test-{v}"] = [s for s in te if s["voice"] == v]
    return {k: v for k, v in out.items() if v}


def group_stats(P_list, streams, thresholds=(0.5, 0.9, 0.98), hop_s: float = 0.08) -> dict:
    """Keyword-window posteriors and detector hits / false accepts/h of one group (P: (T, C) per stream)."""
    from .streamtrain import score_steps, simple_detect

    mx, am = [], []
    for P, s in zip(P_list, streams):
        for c, a, z in s["kw"]:
            w = P[a:z + 1]
            mx.append(float(w[:, c].max()))
            am.append(bool((w.argmax(1) == c).any()))
    hours = sum(len(s["y"]) for s in streams) * hop_s / 3600
    rows = []
    for th in thresholds:
        h = fa = 0
        for P, s in zip(P_list, streams):
            a, b = score_steps(simple_detect(P, th), s["kw"])
            h, fa = h + a, fa + b
        rows.append({"threshold": float(th), "hit_rate": h / max(1, len(mx)), "fa_per_hour": fa / max(hours, 1e-9)})
    return {"keywords": len(mx), "hours": hours, "median_max_p": float(np.median(mx)) if mx else 0.0,
            "argmax_share": float(np.mean(am)) if am else 0.0, "detector": rows}


def diagnose_streams(model_dir, feats_dir, family: str = "festival", K: int | None = None, n_train: int = 40,
                     test_feats=None) -> dict:
    import torch

    from ..checkpoint import load_checkpoint
    from .streamtrain import _posteriors

    model_dir = Path(model_dir)
    model, _ = load_checkpoint(model_dir / "last.safetensors")
    model.eval()
    nm = json.loads((model_dir / "norm.json").read_text())
    mean, std = np.asarray(nm["mean"], np.float32), np.asarray(nm["std"], np.float32)
    K = model.cfg.k_max if K is None else int(K)
    out = {}
    for name, ss in stream_groups(feats_dir, family, n_train, test_feats=test_feats).items():
        out[name] = group_stats(_posteriors(model, ss, mean, std, K, torch), ss)
    return out


def val_readout(program_path, sets_dir, family: str = "festival", test: bool = False) -> dict:
    """Hits at <= CAPS false accepts/h on the validation sets (keyword + keyword-free streams pooled, as
    loso.pick_threshold counts them) at K = 32 and 4, the <= 50 FA/h validation pick, and with test the
    clean held-out curve read the same way (keyword-free streams' false accepts)."""
    from ..program import StreamProgram
    from . import loso as L
    from .loso_eval import essm_rows
    from .spotter import KeywordSpotter

    sets_dir = Path(sets_dir)
    prog = StreamProgram.load(program_path)
    sp = KeywordSpotter(prog)
    val = {k: [L.load_set(p) for p in sorted(sets_dir.glob(f"val_{family}_{k}_*.npz"))] for k in ("kw", "neg")}
    if not val["kw"] or not val["neg"]:
        raise FileNotFoundError(f"no validation sets val_{family}_kw_* / val_{family}_neg_* in {sets_dir}")
    res = {}
    for K in (prog.k_max, min(4, prog.k_max)):
        vk, vn = essm_rows(prog, sp, val["kw"], K), essm_rows(prog, sp, val["neg"], K)
        curve = [{"threshold": a["threshold"], "hit_rate": a["hit_rate"],
                  "fa_per_hour": (a["false_accepts"] + b["false_accepts"]) / (a["hours"] + b["hours"])}
                 for a, b in zip(vk, vn)]
        r = {"val": {c: max([x["hit_rate"] for x in curve if x["fa_per_hour"] <= c] or [0.0]) for c in CAPS},
             "pick50": L.pick_threshold(vk, vn, 50.0)}
        if test:
            tk, tn = L.load_condition(sets_dir, "test", family, "clean")
            rk, rn = essm_rows(prog, sp, tk, K), essm_rows(prog, sp, tn, K)
            tc = [{"threshold": a["threshold"], "hit_rate": a["hit_rate"], "fa_per_hour": b["fa_per_hour"]}
                  for a, b in zip(rk, rn)]
            r["test"] = {c: max([x["hit_rate"] for x in tc if x["fa_per_hour"] <= c] or [0.0]) for c in CAPS}
            r["test_at_pick50"] = min(tc, key=lambda x: abs(x["threshold"] - r["pick50"]["threshold"]))
        res[K] = r
    return res


def per_keyword_table(prog, spotter, sets, K: int, thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(hits (n_th, n_kw), false accepts (n_th, n_kw), keywords per keyword (n_kw,), hours) of the
    spotter's rule at each global threshold, split by the detected keyword."""
    from . import loso as L
    from .evaluate import score_stream

    names = [spotter.labels[i] for i in spotter.keyword_ids]
    H = np.zeros((len(thresholds), len(names)))
    F = np.zeros_like(H)
    N = np.zeros(len(names))
    hours = 0.0
    for s in sets:
        Y = L.engine_outputs(prog, L.normalise(prog, s["F"]), K)
        act = L.vad_active(spotter, s["levels"], s["times"])
        N += [sum(e.label == n for e in s["events"]) for n in names]
        hours += len(s["pcm"]) / 16000 / 3600
        for i, th in enumerate(thresholds):
            dets = sorted(L.fast_replay(spotter, Y, s["levels"], s["times"], th, act), key=lambda d: d.time_s)
            _, verdicts = score_stream(dets, s["events"], len(s["pcm"]) / 16000)
            for d, v in zip(dets, verdicts):
                (H if v == "hit" else F)[i, names.index(d.label)] += 1
    return H, F, N, hours


def greedy_per_keyword(H: np.ndarray, F: np.ndarray, hours: float, cap: float) -> np.ndarray:
    """Per keyword an index into the (ascending) thresholds: start all at the strictest, then lower the
    keyword whose next step gains the most hits per added false accept while the total stays <= cap/h."""
    n_th, n_kw = H.shape
    idx = np.full(n_kw, n_th - 1)
    cols = np.arange(n_kw)
    while True:
        best = None
        for c in range(n_kw):
            for j in range(idx[c] - 1, -1, -1):
                dh, df = H[j, c] - H[idx[c], c], F[j, c] - F[idx[c], c]
                if dh <= 0 or (F[idx, cols].sum() + df) / hours > cap:
                    continue
                r = dh / (df + 0.5)
                if best is None or r > best[0]:
                    best = (r, c, j)
        if best is None:
            return idx
        idx[best[1]] = best[2]


def per_keyword_estimate(program_path, sets_dir, family: str = "festival", caps=CAPS, K: int | None = None) -> list[dict]:
    from ..program import StreamProgram
    from . import loso as L
    from .spotter import KeywordSpotter

    sets_dir = Path(sets_dir)
    prog = StreamProgram.load(program_path)
    sp = KeywordSpotter(prog)
    K = prog.k_max if K is None else K
    ths = np.asarray(L.THRESHOLDS)
    val = [L.load_set(p) for p in sorted(sets_dir.glob(f"val_{family}_*.npz"))]
    tk, tn = L.load_condition(sets_dir, "test", family, "clean")
    if not val or not tk:
        raise FileNotFoundError(f"no validation or clean test sets of {family} in {sets_dir}")
    Hv, Fv, Nv, hv = per_keyword_table(prog, sp, val, K, ths)
    Ht, _, Nt, _ = per_keyword_table(prog, sp, tk, K, ths)
    _, Fn, _, hn = per_keyword_table(prog, sp, tn, K, ths)
    cols = np.arange(Hv.shape[1])
    out = []
    for cap in caps:
        ok = [i for i in range(len(ths)) if Fv[i].sum() / hv <= cap]
        g = max(ok, key=lambda i: (Hv[i].sum(), i)) if ok else int(np.argmin(Fv.sum(1)))
        idx = greedy_per_keyword(Hv, Fv, hv, cap)
        out.append({"cap": cap, "global": {"threshold": float(ths[g]), "val": (Hv[g].sum() / Nv.sum(), Fv[g].sum() / hv),
                                           "test": (Ht[g].sum() / Nt.sum(), Fn[g].sum() / hn)},
                    "per_keyword": {"thresholds": {sp.labels[k]: float(ths[i]) for k, i in zip(sp.keyword_ids, idx)},
                                    "val": (Hv[idx, cols].sum() / Nv.sum(), Fv[idx, cols].sum() / hv),
                                    "test": (Ht[idx, cols].sum() / Nt.sum(), Fn[idx, cols].sum() / hn)}})
    return out


def per_keyword_hits(program_path, sets_dir, family: str = "festival", conditions=("clean", "10dB"),
                     K: int | None = None, threshold: float | None = None) -> dict:
    """Held-out hits per keyword and false accepts on keyword-free speech per detected keyword, at the
    program's stored detector threshold (kws-eval stores its validation pick there) or `threshold`:
    {condition: {"threshold", "hours", keyword: {"hits", "keywords", "fa_neg"}}}."""
    from ..program import StreamProgram
    from . import loso as L
    from .spotter import KeywordSpotter

    prog = StreamProgram.load(program_path)
    sp = KeywordSpotter(prog)
    th = float(sp.threshold if threshold is None else threshold)
    K = prog.k_max if K is None else K
    out = {}
    for c in conditions:
        kw, neg = L.load_condition(sets_dir, "test", family, c)
        if not kw:
            raise FileNotFoundError(f"no test_{family}_kw_{c}.npz in {sets_dir}")
        H, _, N, _ = per_keyword_table(prog, sp, kw, K, [th])
        _, Fn, _, hn = per_keyword_table(prog, sp, neg, K, [th]) if neg else (None, np.zeros_like(H), None, 0.0)
        names = [sp.labels[i] for i in sp.keyword_ids]
        out[c] = {"threshold": th, "K": K, "hours": hn} | {
            n: {"hits": int(H[0, i]), "keywords": int(N[i]), "fa_neg": int(Fn[0, i])} for i, n in enumerate(names)}
    return out


def budget_det(program_path, sets_dir, family: str = "festival", Ks=(32, 8, 4), caps=CAPS,
               conditions=("clean", "10dB"), thresholds=None, n_boot: int = 0) -> dict:
    """The elastic target read as the issue writes it: K = k's hits against K = K̄'s at the *same false-accept
    rate*, not at the same threshold. Per held-out condition, one engine pass per K over the keyword and
    keyword-free test streams and every threshold of the grid (loso_eval.essm_rows), each K's DET curve read at
    <= cap false accepts/h of keyword-free speech (loso_eval.det_point: each K at its own best threshold), and
    the ratio hits(K) / hits(K̄) at each cap. Reporting only: the test curve chooses nothing. With n_boot > 0
    also "boot": {K: {cap: (5%, 95%)}}, the keyword-sampling interval of the ratio at the read-out thresholds
    (bootstrap_ratios; the keyword-free speech's own sampling is not in it).
    {condition: {"keywords", "kw_hours", "neg_hours", "curves": {K: [{threshold, hits, false_accepts}]},
                 "det": {K: {cap: det_point}}, "ratio": {K: {cap: ratio or None}}}}"""
    from ..program import StreamProgram
    from . import loso as L
    from .loso_eval import det_point, essm_rows
    from .spotter import KeywordSpotter

    prog = StreamProgram.load(program_path)
    sp = KeywordSpotter(prog)
    Ks = [int(k) for k in Ks]
    bad = [k for k in Ks if not 1 <= k <= prog.k_max]
    if bad:
        raise ValueError(f"budgets {bad} outside 1 .. {prog.k_max} (the program's K̄)")
    if any(not c > 0 for c in caps):
        raise ValueError(f"false-accept caps must be > 0, got {list(caps)}")
    ref = prog.k_max
    Ks = [ref] + [k for k in dict.fromkeys(Ks) if k != ref]
    thresholds = L.THRESHOLDS if thresholds is None else tuple(float(t) for t in thresholds)
    out = {}
    for c in conditions:
        kw, neg = L.load_condition(sets_dir, "test", family, c)
        if not kw or not neg:
            raise FileNotFoundError(f"no test_{family}_kw_{c}.npz and test_{family}_neg_{c}.npz in {sets_dir}")
        r = {"keywords": 0, "kw_hours": 0.0, "neg_hours": 0.0, "curves": {}, "det": {}, "ratio": {}}
        for K in Ks:
            rk, rn = essm_rows(prog, sp, kw, K, thresholds), essm_rows(prog, sp, neg, K, thresholds)
            r["keywords"], r["kw_hours"], r["neg_hours"] = rk[0]["keywords"], rk[0]["hours"], rn[0]["hours"]
            r["curves"][K] = [{"threshold": a["threshold"], "hits": a["hits"], "false_accepts": b["false_accepts"]}
                              for a, b in zip(rk, rn)]
            r["det"][K] = {cap: det_point(rk, rn, cap) for cap in caps}
            log.info("%s %s K=%d: %s", program_path, c, K,
                     ", ".join(f"<= {cap:g}: {d['hits']}" for cap, d in r["det"][K].items()))
        r["ratio"] = {K: {cap: (r["det"][K][cap]["hits"] / r["det"][ref][cap]["hits"]
                                if r["det"][ref][cap]["hits"] else None) for cap in caps} for K in Ks}
        if n_boot > 0:
            Ys = {K: [L.engine_outputs(prog, L.normalise(prog, s["F"]), K) for s in kw] for K in Ks}
            r["boot"] = {K: {} for K in Ks}
            for cap in caps:
                flags = {}
                for K in Ks:
                    th = r["det"][K][cap]["threshold"]
                    flags[K] = (np.concatenate([keyword_hit_flags(L.fast_replay(sp, Y, s["levels"], s["times"], th),
                                                                  s["events"]) for Y, s in zip(Ys[K], kw)])
                                if th is not None else np.zeros(r["keywords"], dtype=bool))
                    if int(flags[K].sum()) != r["det"][K][cap]["hits"]:
                        raise RuntimeError(f"keyword flags ({int(flags[K].sum())}) disagree with the sweep's hits "
                                           f"({r['det'][K][cap]['hits']}) at K={K}, threshold {th}")
                for K, iv in bootstrap_ratios(flags, ref, n_boot).items():
                    r["boot"][K][cap] = iv
        out[c] = r
    return out


def keyword_hit_flags(detections, events) -> np.ndarray:
    """Per keyword event (keywords only, in list order): found or not, by evaluate.score_stream's matching
    (detections in time order, each taking the first unused event of its label whose window
    [start, end + TOLERANCE_S] holds it). tests hold the sum equal to score_stream's hits."""
    from .data import KEYWORDS
    from .evaluate import TOLERANCE_S

    kw = [e for e in events if e.label in KEYWORDS]
    used = np.zeros(len(kw), dtype=bool)
    for d in sorted(detections, key=lambda d: d.time_s):
        for i, e in enumerate(kw):
            if not used[i] and e.label == d.label and e.start_s <= d.time_s <= e.end_s + TOLERANCE_S:
                used[i] = True
                break
    return used


def bootstrap_ratios(flags: dict, ref, n_boot: int = 2000, seed: int = 0, q=(0.05, 0.95)) -> dict:
    """Keyword-sampling interval of hits(K) / hits(ref) with every K's threshold held fixed: the keywords
    resampled with replacement, the same draw for every K (paired). flags: {K: bool array over the same
    keywords}. Returns {K: (low, high)} at the quantiles q (None where the reference finds nothing)."""
    base = np.asarray(flags[ref], dtype=np.int64)
    n = len(base)
    if n == 0:
        return {K: None for K in flags}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    h_ref = base[idx].sum(1)
    out = {}
    for K, f in flags.items():
        hk = np.asarray(f, dtype=np.int64)[idx].sum(1)
        ok = h_ref > 0
        out[K] = (None if not ok.any() else
                  tuple(float(x) for x in np.quantile(hk[ok] / h_ref[ok], q)))
    return out


def budget_det_markdown(name: str, res: dict) -> str:
    """One table per program: rows = condition x cap, columns = K (hits, false accepts, threshold) and the
    ratios to K̄ (the first K of the result)."""
    lines = []
    for c, r in res.items():
        Ks = list(r["det"])
        ref = Ks[0]
        lines += [f"{name}, {c}: {r['keywords']} keywords in {r['kw_hours']:.2f} h of keyword streams, "
                  f"{r['neg_hours']:.2f} h of keyword-free speech", "",
                  "| ≤ FA/h (events) | " + " | ".join(f"K = {K}: hits (FA, threshold)" for K in Ks) + " | "
                  + " | ".join(f"K = {K} / K = {ref}" for K in Ks[1:]) + " |",
                  "|---|" + "---|" * (2 * len(Ks) - 1)]
        for cap, d0 in r["det"][ref].items():
            cells = []
            for K in Ks:
                d = r["det"][K][cap]
                th = "none" if d["threshold"] is None else f"{d['threshold']:g}"
                cells.append(f"{100 * d['hit_rate']:.1f}% ({d['hits']}) ({d['false_accepts']}, {th})")
            rat = [("n/a" if r["ratio"][K][cap] is None else f"{100 * r['ratio'][K][cap]:.0f}%") for K in Ks[1:]]
            if "boot" in r:
                rat = [x + ("" if r["boot"][K][cap] is None else
                            " [{:.0f}–{:.0f}%]".format(*(100 * v for v in r["boot"][K][cap])))
                       for x, K in zip(rat, Ks[1:])]
            ev = int(np.floor(cap * r["neg_hours"] + 1e-9))
            lines.append(f"| {cap:g} (≤ {ev}) | " + " | ".join(cells) + " | " + " | ".join(rat) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_budget_det(results: dict, path) -> None:
    """One panel per (program, condition): each budget's held-out DET curve (hits vs keyword-free false
    accepts/h, every threshold of the sweep, the lowest-FA point per hit count) and the read-out caps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    panels = [(name, c, r) for name, res in results.items() for c, r in res.items()]
    if not panels:
        raise ValueError("plot_budget_det: no results to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (name, c, r) in zip(axes[0], panels):
        for K, ls in zip(r["curves"], ("-", "--", ":", "-.")):
            pts = sorted((x["false_accepts"] / max(r["neg_hours"], 1e-9), x["hits"]) for x in r["curves"][K])
            fa, hi = [], []
            for f, h in pts:                          # the frontier: more false accepts only for more hits
                if fa and f == fa[-1]:
                    hi[-1] = max(hi[-1], h)
                elif not hi or h > hi[-1]:
                    fa.append(f)
                    hi.append(h)
            ax.step(np.maximum(fa, 0.1), 100 * np.asarray(hi) / max(r["keywords"], 1), ls, where="post", label=f"K = {K}")
        for cap in next(iter(r["det"].values())):
            ax.axvline(float(cap), color="0.6", lw=0.6)
        ax.set_xscale("log")
        ax.set_xlabel(f"false accepts / h ({r['neg_hours']:.2f} h keyword-free)", fontsize=8)
        ax.set_ylabel(f"keywords found (%) of {r['keywords']}", fontsize=8)
        ax.set_title(f"{name}, {c}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def engine_cost(program_path, n: int = 500, Ks=(4, None)) -> dict:
    """{"params": n, "us_per_step": {K: median µs}} of the compiled program (thread CPU time per call)."""
    import time

    from ..engine import StreamEngine
    from ..program import StreamProgram

    prog = StreamProgram.load(program_path)
    eng = StreamEngine(prog, batch=1, dtype=np.float32)
    eng.warmup()
    x = np.random.default_rng(0).standard_normal(prog.d_in).astype(np.float32)
    out = {}
    for K in Ks:
        K = prog.k_max if K is None else min(K, prog.k_max)
        eng.reset()
        ts = []
        for i in range(n + 50):
            t = time.thread_time()
            eng.step(x, K)
            ts.append(time.thread_time() - t)
        out[K] = 1e6 * float(np.median(ts[50:]))
    params = int(sum(np.asarray(a).size for a in prog.arrays.values()))
    return {"params": params, "us_per_step": out}


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="keyword model diagnosis: capacity or data (see module doc)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a1 = sub.add_parser("streams")
    a1.add_argument("model_dir")
    a1.add_argument("feats")
    a1.add_argument("--test-family", default="festival", type=V.fold_name, help="a family or held-out voices")
    a1.add_argument("--K", type=int, default=None)
    a1.add_argument("--n-train", type=int, default=40)
    a1.add_argument("--test-feats", default=None, help="features directory holding the held-out voices (default FEATS)")
    a2 = sub.add_parser("val")
    a2.add_argument("programs", nargs="+")
    a2.add_argument("--sets", default="runs/kws2/sets")
    a2.add_argument("--test-family", default="festival", type=V.fold_name, help="a family or held-out voices")
    a2.add_argument("--test", action="store_true")
    a4 = sub.add_parser("cost")
    a4.add_argument("programs", nargs="+")
    a4.add_argument("--n", type=int, default=500)
    a3 = sub.add_parser("perkw")
    a3.add_argument("program")
    a3.add_argument("--sets", default="runs/kws2/sets")
    a3.add_argument("--test-family", default="festival", type=V.fold_name, help="a family or held-out voices")
    a5 = sub.add_parser("perkw-test", help="held-out hits per keyword at the program's stored threshold")
    a5.add_argument("programs", nargs="+")
    a5.add_argument("--sets", default="runs/kws2/sets")
    a5.add_argument("--test-family", default="festival", type=V.fold_name, help="a family or held-out voices")
    a5.add_argument("--K", type=int, default=None)
    a6 = sub.add_parser("det-k", help="K = k vs K = K̄ hits at the same false-accept rate (held-out DET curves)")
    a6.add_argument("programs", nargs="+")
    a6.add_argument("--sets", default="runs/kws2/sets")
    a6.add_argument("--test-family", default="festival", type=V.fold_name, help="a family or held-out voices")
    a6.add_argument("--K", default="32,8,4", help="budgets, comma-separated (the program's K̄ is the reference)")
    a6.add_argument("--caps", default="2,10,50", help="false accepts per hour of keyword-free speech")
    a6.add_argument("--conditions", default="clean,10dB")
    a6.add_argument("--json", default=None, help="also write the result (curves included) to this file")
    a6.add_argument("--plot", default=None, help="also plot every budget's DET curve to this PNG")
    a6.add_argument("--name", action="append", default=None,
                    help="a short name per program for the table and plot (repeat in order; default the path)")
    a6.add_argument("--boot", type=int, default=0,
                    help="bootstrap draws for a 90%% keyword-sampling interval of each ratio (0: none)")
    a6.add_argument("--fine", action="store_true", help="a finer threshold grid than kws-eval's (diagnose.fine_thresholds)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if a.cmd == "det-k":
        try:
            Ks = [int(x) for x in a.K.split(",")]
            caps = [float(x) for x in a.caps.split(",")]
        except ValueError:
            ap.error(f"--K and --caps take comma-separated numbers, got {a.K!r} / {a.caps!r}")
        if any(k < 1 for k in Ks) or any(not c > 0 for c in caps) or a.boot < 0:
            ap.error("--K values must be >= 1, --caps > 0 and --boot >= 0")
        conds = [x for x in a.conditions.split(",") if x]
        names = a.name or list(a.programs)
        if len(names) != len(a.programs) or len(set(names)) != len(names):
            ap.error(f"--name: one distinct name per program ({len(a.programs)}), got {names}")
        allres = {}
        for p, name in zip(a.programs, names):
            if not Path(p).is_file():
                ap.error(f"no program {p}")
            try:
                res = budget_det(p, a.sets, a.test_family, Ks, caps, conds, fine_thresholds() if a.fine else None,
                                 a.boot)
            except (FileNotFoundError, ValueError) as e:
                ap.error(str(e))
            allres[name] = res
            print(budget_det_markdown(name, res))
        if a.plot:
            plot_budget_det(allres, a.plot)
        if a.json:
            from ..fileio import atomic_write_bytes
            atomic_write_bytes(a.json, json.dumps({"sets": str(a.sets), "test_family": a.test_family, "fine": a.fine, "boot": a.boot,
                                                   "programs": dict(zip(names, a.programs)),
                                                   "results": allres}, indent=1).encode())
        return 0
    if a.cmd == "perkw-test":
        for p in a.programs:
            if not Path(p).is_file():
                ap.error(f"no program {p}")
            try:
                res = per_keyword_hits(p, a.sets, a.test_family, K=a.K)
            except FileNotFoundError as e:
                ap.error(str(e))
            for c, r in res.items():
                kws = [k for k in r if k not in ("threshold", "K", "hours")]
                print(f"{p} {c} K={r['K']} threshold {r['threshold']}: hits " +
                      ", ".join(f"{k} {r[k]['hits']}/{r[k]['keywords']}" for k in kws) +
                      f" | false accepts on {r['hours']:.2f} h keyword-free: " +
                      ", ".join(f"{k} {r[k]['fa_neg']}" for k in kws if r[k]["fa_neg"]))
        return 0
    if a.cmd == "streams":
        if a.n_train < 1 or (a.K is not None and a.K < 1):
            ap.error("--n-train and --K must be >= 1")
        for p in (Path(a.model_dir) / "last.safetensors", Path(a.model_dir) / "norm.json"):
            if not p.is_file():
                ap.error(f"no {p}: train the fold first (python -m essm_stream.kws.streamtrain)")
        res = diagnose_streams(a.model_dir, a.feats, a.test_family, a.K, a.n_train, a.test_feats)
        for name, g in res.items():
            det = " ".join(f"th {r['threshold']:.2f}: {100 * r['hit_rate']:.0f}% / {r['fa_per_hour']:.0f}"
                           for r in g["detector"])
            print(f"{name:34s} {g['hours']:.2f} h {g['keywords']:5d} kw  median max p {g['median_max_p']:.2f}  "
                  f"arg-max {100 * g['argmax_share']:.0f}%  hits / FA/h {det}")
        return 0
    if a.cmd == "cost":
        if a.n < 1:
            ap.error("--n must be >= 1")
        for p in a.programs:
            if not Path(p).is_file():
                ap.error(f"no program {p}")
            c = engine_cost(p, a.n)
            print(f"{p}: " + ", ".join(f"K={K} {us:.1f} µs/step" for K, us in c["us_per_step"].items())
                  + f", {c['params']} numbers in the program")
        return 0
    if a.cmd == "perkw":
        if not Path(a.program).is_file():
            ap.error(f"no program {a.program}")
        try:
            rows = per_keyword_estimate(a.program, a.sets, a.test_family)
        except FileNotFoundError as e:
            ap.error(str(e))
        for r in rows:
            g, k = r["global"], r["per_keyword"]
            print(f"<= {r['cap']:g} FA/h on validation: one threshold {g['threshold']}: validation "
                  f"{100 * g['val'][0]:.0f}% at {g['val'][1]:.1f}, held-out clean {100 * g['test'][0]:.0f}% at "
                  f"{g['test'][1]:.1f} FA/h | per keyword: validation {100 * k['val'][0]:.0f}% at {k['val'][1]:.1f}, "
                  f"held-out clean {100 * k['test'][0]:.0f}% at {k['test'][1]:.1f} FA/h {k['thresholds']}")
        return 0
    for p in a.programs:
        if not Path(p).is_file():
            ap.error(f"no program {p}")
        try:
            res = val_readout(p, a.sets, a.test_family, a.test)
        except FileNotFoundError as e:
            ap.error(str(e))
        for K, r in res.items():
            line = (f"{p} K={K}: validation " + " / ".join(f"{100 * r['val'][c]:.0f}%" for c in CAPS)
                    + f" at <= 2 / 10 / 50 FA/h; pick at <= 50: threshold {r['pick50']['threshold']} "
                    f"({100 * r['pick50']['hit_rate']:.0f}% at {r['pick50']['fa_per_hour']:.1f} FA/h)")
            if "test" in r:
                t = r["test_at_pick50"]
                line += (" | held-out clean " + " / ".join(f"{100 * r['test'][c]:.0f}%" for c in CAPS)
                         + f"; at the pick {100 * t['hit_rate']:.0f}% at {t['fa_per_hour']:.1f} FA/h")
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
