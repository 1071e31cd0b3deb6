"""Hours of validation speech for the threshold choice (issue 9 item 6; torch-free).

The loso validation sets (loso.build_family_sets) hold ≈ 0.65 h, so a threshold for <= 2 or <= 10
false accepts/h rests on 0-7 events. This adds, for a fold's validation voices only (never a
held-out voice):

- new banks (`<banks>/calib/`): per validation voice fresh keyword utterances (alone and in
  sentences) and keyword-free sentences, other texts and prosody draws than its training bank;
- sets (`<sets>/val_<family>_{kw,neg}_{clean,10dB}_<tag>.npz`, which kws-eval's validation glob
  pools with the existing validation sets): the keyword-free speech per voice group (tag `ce`:
  espeak-ng test variants, `cr`: flite rms) and the keyword streams (`ck`), each once as synthesised
  and once with every utterance given a random speaker (perturb.random_speaker: tempo, pitch and
  formants changed independently; tags `pe`, `pr`, `pk`).

    python -m essm_stream.kws.calib BANKS SETS [--family festival] [--workers 2]
"""
from __future__ import annotations

import argparse
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from . import corpus as C
from . import loso as L
from . import voices as V
from .perturb import random_speaker

log = logging.getLogger(__name__)
KW_SIZES = {"espeak": (3, 3), "flite": (6, 6), "festival": (8, 8)}  # per validation voice: alone, in sentences (per keyword)
NEG_SENTENCES = {"espeak": 150, "flite": 600, "festival": 600}   # per validation voice (≈ 2.3 h espeak-ng, 0.6 h rms)
# set tags: first letter c = as synthesised, p = every utterance by a random speaker; second letter the voices
# and kind: e espeak-ng keyword-free, r flite keyword-free, k every validation voice's keywords,
# f festival (recorded validation voices of a '~' fold) keyword-free, g their keywords
TAG_GROUPS = {"e": ("espeak", "neg"), "r": ("flite", "neg"), "k": (None, "kw"), "f": ("festival", "neg"),
              "g": ("festival", "kw")}
DEFAULT_TAGS = ("ce", "ck", "cr", "pe", "pk", "pr")


def bank_jobs(banks_dir, family: str, only_family: str | None = None) -> list[tuple]:
    """Calibration banks of the fold's validation voices (only_family: those of one synthesizer family)."""
    out = Path(banks_dir) / "calib"
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for v in V.fold(family)["val"]:
        fam, stem = V.family_of(v), v.replace(":", "_", 1)
        if only_family and fam != only_family:
            continue
        jobs.append((str(out / f"kw_{stem}.npz"), v, KW_SIZES[fam] + (0, 0), C._seed("calib-kw", v), False))
        jobs.append((str(out / f"neg_{stem}.npz"), v, NEG_SENTENCES[fam], C._seed("calib-neg", v), True))
    return jobs


def build_banks(banks_dir, family: str, workers: int = 2, only_family: str | None = None) -> list[str]:
    done = []
    with ProcessPoolExecutor(workers) as ex:
        for path, n, dt in ex.map(C._job, bank_jobs(banks_dir, family, only_family)):
            if n:
                log.info("%s: %d utterances in %.0f s", path, n, dt)
            done.append(path)
    return done


def perturbed(items: list[dict], rng) -> list[dict]:
    """Each utterance spoken by a random speaker; keyword times scaled with the utterance's length."""
    out = []
    for j in items:
        a, _ = random_speaker(j["audio"], rng)
        s = len(a) / max(1, len(j["audio"]))
        k = dict(j, audio=a.astype(np.float32))
        if "kw_start" in j:
            k["kw_start"], k["kw_end"] = j["kw_start"] * s, j["kw_end"] * s
        out.append(k)
    return out


def _group(banks_dir, family, kind: str, fam_filter: str | None):
    items = []
    for v in V.fold(family)["val"]:
        if fam_filter and V.family_of(v) != fam_filter:
            continue
        f = Path(banks_dir) / "calib" / f"{kind}_{v.replace(':', '_', 1)}.npz"
        if f.is_file():
            items += V.load_bank(f)
    return items


def _set_job(args):
    banks_dir, sets_dir, family, tag, seed = args
    fam_filter, kind = TAG_GROUPS[tag[1]]
    items = _group(banks_dir, family, kind, fam_filter)
    if tag[0] == "p":
        items = perturbed(items, np.random.default_rng(seed + 7))
    if kind == "kw":
        neg = _group(banks_dir, family, "neg", None)
        pool = [j["audio"] for j in neg[::7]] or None
        return L.build_sets(banks_dir, sets_dir, f"val_{family}", items, [], pool, seed=seed,
                            snrs=(None, 10.0), tag=f"_{tag}")
    pool = [j["audio"] for j in items[::7]] or None
    keep = [j for i, j in enumerate(items) if i % 7]
    return L.build_sets(banks_dir, sets_dir, f"val_{family}", [], keep, pool, seed=seed, neg_noisy_s=600.0,
                        snrs=(None, 10.0), tag=f"_{tag}")


def build_calib_sets(banks_dir, sets_dir, family: str, workers: int = 2, tags=DEFAULT_TAGS) -> list[str]:
    bad = [t for t in tags if len(t) != 2 or t[0] not in "cp" or t[1] not in TAG_GROUPS]
    if bad:
        raise ValueError(f"unknown calibration set tags {bad}: c|p followed by one of {sorted(TAG_GROUPS)}")
    order = {t: i for i, t in enumerate(DEFAULT_TAGS)}      # the historical seeds of the default tags kept
    jobs = [(str(banks_dir), str(sets_dir), family, tag, 300 + V.fold_seed(family) + order.get(tag, 6 + i))
            for i, tag in enumerate(tags)]
    out = []
    with ProcessPoolExecutor(workers) as ex:
        for w in ex.map(_set_job, jobs):
            out += w
    return out


# ----------------------------------------------------------------------------- reading a program on validation
def load_light(path) -> dict:
    """A stream set without its PCM (features, levels, times, events, seconds, group tag)."""
    import json

    from .data import Event
    z = np.load(path, allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    parts = Path(path).stem.split("_")                   # val_<family>_<kind>_<snr>[_<tag>]
    return {"F": z["F"], "levels": z["levels"], "times": z["times"], "seconds": float(meta["seconds"]),
            "voices": meta.get("voices", []),
            "events": [Event(e[0], float(e[1]), float(e[2])) for e in json.loads(str(z["events"]))],
            "kind": parts[2], "snr": parts[3], "tag": parts[4] if len(parts) > 4 else "old", "path": str(path)}


def val_sets(sets_dir, family: str) -> list[dict]:
    return [load_light(p) for p in sorted(Path(sets_dir).glob(f"val_{family}_*_*.npz")) if ".tmp" not in p.name]


def set_rows(prog, spotter, sets, K: int, thresholds=L.THRESHOLDS) -> list[list[dict]]:
    """Per set, the spotter's hits / false accepts at every threshold."""
    out = []
    for s in sets:
        Y = L.engine_outputs(prog, L.normalise(prog, s["F"]), K)
        out.append(L.sweep_thresholds(spotter, Y, s["levels"], s["times"], s["events"], s["seconds"], thresholds))
    return out


def pooled(rows: list[list[dict]]) -> list[dict]:
    res = []
    for i in range(len(rows[0])):
        h, n = sum(r[i]["hits"] for r in rows), sum(r[i]["keywords"] for r in rows)
        fa, hours = sum(r[i]["false_accepts"] for r in rows), sum(r[i]["hours"] for r in rows)
        res.append({"threshold": rows[0][i]["threshold"], "hits": h, "keywords": n, "false_accepts": fa,
                    "hours": hours, "hit_rate": h / max(1, n), "fa_per_hour": fa / max(hours, 1e-9)})
    return res


def readout(program_path, sets, K: int | None = None, caps=(2.0, 10.0, 50.0), test_sets=None,
            fa_on: str = "all", recorded_cap: float | None = None, recorded_voices=None,
            speaker_cap: float | None = None, speaker_quantile: float = 0.8) -> dict:
    """A program on the pooled validation: picks at each cap (loso.pick_threshold with fa_on: the budget
    over keyword + keyword-free streams, or keyword-free only), and at each pick the false accepts/h
    of every group of keyword-free sets (old, ce, cr, pe, pr) and of the keyword streams.
    recorded_cap: the picks also keep the keyword-free false accepts/h of the recorded validation speakers' sets
    <= recorded_cap; recorded_voices (loso.recorded_speakers) narrows those sets to the named speakers'.
    speaker_cap / speaker_quantile: the picks also keep the speaker_quantile-quantile over validation speakers
    (keyword-free sets grouped by speaker, loso.speaker_split; pooled sets left out) of FA/h <= speaker_cap."""
    from ..program import StreamProgram
    from .spotter import KeywordSpotter

    prog = StreamProgram.load(program_path)
    sp = KeywordSpotter(prog)
    K = prog.k_max if K is None else K
    rows = set_rows(prog, sp, sets, K)
    kw = pooled([r for r, s in zip(rows, sets) if s["kind"] == "kw"])
    neg = pooled([r for r, s in zip(rows, sets) if s["kind"] == "neg"])
    groups = {}
    for g in sorted({(s["kind"], s["tag"]) for s in sets}):
        groups[f"{g[0]}:{g[1]}"] = pooled([r for r, s in zip(rows, sets) if (s["kind"], s["tag"]) == g])
    out = {"program": str(program_path), "K": K, "hours_kw": kw[0]["hours"], "hours_neg": neg[0]["hours"],
           "keywords": kw[0]["keywords"], "fa_on": fa_on, "picks": {}}
    guard = None
    if recorded_cap is not None:          # the picks also keep the recorded validation speakers' rate <= recorded_cap
        spk = L.recorded_speakers(recorded_voices)
        rec = [r for r, s in zip(rows, sets) if s["kind"] == "neg" and L.is_recorded(s.get("voices"), spk)]
        if not rec:
            raise FileNotFoundError("recorded_cap: no keyword-free validation set of recorded voices"
                                    + ("" if spk is None else f" of {recorded_voices}"))
        out["recorded_sets"] = [Path(s["path"]).name for s in sets
                                if s["kind"] == "neg" and L.is_recorded(s.get("voices"), spk)]
        guard = pooled(rec)
        out["recorded_cap"], out["hours_recorded_neg"] = recorded_cap, guard[0]["hours"]
        out["recorded_voices"] = recorded_voices if isinstance(recorded_voices, (str, type(None))) else ",".join(recorded_voices)
        out["recorded_curve"] = [{"threshold": g["threshold"], "fa_per_hour": g["fa_per_hour"]} for g in guard]
    spk = None
    if speaker_cap is not None:           # per-speaker budget (loso.pick_threshold speaker_rows)
        negs = [(r, s) for r, s in zip(rows, sets) if s["kind"] == "neg"]
        spk, out["speaker_pooled_sets"] = L.speaker_split([s for _, s in negs], [r for r, _ in negs])
        if not spk:
            raise FileNotFoundError("speaker_cap: no keyword-free validation set is spoken by one speaker (a pooled "
                                    "stream cannot be split by speaker: build one set per speaker)")
        spk = {k: pooled(v) for k, v in spk.items()}
        out["speaker_cap"], out["speaker_quantile"] = speaker_cap, speaker_quantile
        out["speaker_hours_neg"] = {k: v[0]["hours"] for k, v in spk.items()}
    for c in caps:
        p = L.pick_threshold(kw, neg, c, fa_on, guard, recorded_cap, speaker_rows=spk, speaker_cap=speaker_cap,
                             speaker_quantile=speaker_quantile)
        i = [r["threshold"] for r in kw].index(p["threshold"])
        p["groups_fa_per_hour"] = {g: v[i]["fa_per_hour"] for g, v in groups.items()}
        p["groups_hit_rate"] = {g: v[i]["hit_rate"] for g, v in groups.items() if g.startswith("kw")}
        out["picks"][str(c)] = p
    out["curve"] = [{"threshold": a["threshold"], "hit_rate": a["hit_rate"],
                     "fa_per_hour": (a["false_accepts"] + b["false_accepts"]) / (a["hours"] + b["hours"]),
                     "neg_fa_per_hour": b["fa_per_hour"], "kw_fa_per_hour": a["fa_per_hour"]}
                    for a, b in zip(kw, neg)]
    out["groups"] = groups
    if test_sets:                                        # reporting only: held-out curves, never a choice
        trows = set_rows(prog, sp, test_sets, K)
        for g in sorted({(s["kind"], s["snr"]) for s in test_sets}):
            out[f"test_{g[0]}_{g[1]}"] = pooled([r for r, s in zip(trows, test_sets) if (s["kind"], s["snr"]) == g])
    return out


def compile_checkpoints(model_dir, cache_dir) -> list[Path]:
    """MODEL_DIR's last and step_* checkpoints compiled to CACHE/<run>_<ckpt>/kws.essm (existing kept)."""
    from .streamtrain import build_fold_program

    model_dir = Path(model_dir)
    run = model_dir.parent.name
    out = []
    cks = sorted(model_dir.glob("step_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    for ck in [model_dir / "last.safetensors"] + cks:
        d = Path(cache_dir) / f"{run}_{ck.stem}"
        if not (d / "kws.essm").is_file():
            d.mkdir(parents=True, exist_ok=True)
            for name, src in (("last.safetensors", ck), ("norm.json", model_dir / "norm.json")):
                if not (d / name).exists():
                    (d / name).symlink_to(src.resolve())
            build_fold_program(d, note=f"{run} {ck.stem}")
        out.append(d / "kws.essm")
    return out


def select(sets_dir, model_dirs, cache_dir, out_path, family: str = "festival", caps=(2.0, 10.0, 50.0),
           test: bool = False, fa_on: str = "all", recorded_cap: float | None = None,
           recorded_voices=None, speaker_cap: float | None = None, speaker_quantile: float = 0.8) -> list[dict]:
    """Every checkpoint of every run read on the pooled validation; one JSON line each in out_path.
    test: also the held-out clean and 10 dB curves (reporting only; written after the choice rule).
    fa_on: what the caps count (loso.pick_threshold); recorded_cap / speaker_cap: readout's extra budgets."""
    import json

    family = V.fold_name(family)
    sets = val_sets(sets_dir, family)
    if not any(x["kind"] == "kw" for x in sets) or not any(x["kind"] == "neg" for x in sets):
        raise FileNotFoundError(f"no validation keyword and keyword-free sets val_{family}_* in {sets_dir}")
    test_sets = [load_light(p) for n in ("clean", "10dB") for k in ("kw", "neg")
                 for p in sorted(Path(sets_dir).glob(f"test_{family}_{k}_{n}.npz"))] if test else None
    log.info("validation: %d sets, %.2f h keyword streams, %.2f h keyword-free", len(sets),
             sum(s["seconds"] for s in sets if s["kind"] == "kw") / 3600,
             sum(s["seconds"] for s in sets if s["kind"] == "neg") / 3600)
    res = []
    for md in model_dirs:
        progs = [Path(md)] if str(md).endswith(".essm") else compile_checkpoints(md, cache_dir)
        for p in progs:
            r = readout(p, sets, caps=caps, test_sets=test_sets, fa_on=fa_on, recorded_cap=recorded_cap,
                        recorded_voices=recorded_voices, speaker_cap=speaker_cap, speaker_quantile=speaker_quantile)
            res.append(r)
            with open(out_path, "a") as f:
                f.write(json.dumps({k: v for k, v in r.items() if k not in ("groups",)}, default=float) + "\n")
            log.info("%s: %s", p, "  ".join(f"<={c:g}: th {v['threshold']} {100 * v['hit_rate']:.1f}% "
                                             f"{v['fa_per_hour']:.1f}FA/h" for c, v in
                                             ((float(c), v) for c, v in r["picks"].items())))
    return res


# ----------------------------------------------------------------------------- does validation predict the held-out rate?
def calibration_rows(select_jsonl, program_part: str, loso_json, thresholds=(0.92, 0.93, 0.95, 0.97, 0.98, 0.99,
                                                                             0.9925, 0.995, 0.9965, 0.998, 0.999)):
    """Per threshold: validation false accepts/h (keyword-free sets only, and pooled with the keyword
    streams as pick_threshold counts them) beside the held-out family's keyword-free false accepts/h
    and hit rate (clean, K = K̄), from a `select` line and a kws-eval loso.json of the same program."""
    import json

    sel = [json.loads(x) for x in Path(select_jsonl).read_text().splitlines() if program_part in x]
    if not sel:
        raise FileNotFoundError(f"no program matching {program_part!r} in {select_jsonl}")
    v = {round(r["threshold"], 4): r for r in sel[-1]["curve"]}
    fam = next(iter(json.loads(Path(loso_json).read_text())["families"].values()))
    c = fam["conditions"]["clean"]
    tn = {round(r["threshold"], 4): r for r in c["K32_neg_curve"]}
    tk = {round(r["threshold"], 4): r for r in c["K32_kw_curve"]}
    rows = []
    for th in thresholds:
        th = round(th, 4)
        if th in v and th in tn:
            rows.append({"threshold": th, "val_neg_fa_per_hour": v[th]["neg_fa_per_hour"],
                         "val_pooled_fa_per_hour": v[th]["fa_per_hour"], "val_hit_rate": v[th]["hit_rate"],
                         "test_neg_fa_per_hour": tn[th]["fa_per_hour"], "test_fa": tn[th]["false_accepts"],
                         "test_hit_rate": tk[th]["hit_rate"]})
    return rows


def plot_calibration(series: dict, path) -> None:
    """Held-out vs validation keyword-free false accepts/h over thresholds, one line per program
    (series: name -> calibration_rows); points on the diagonal would mean validation predicts it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, rows in series.items():
        x = [max(r["val_neg_fa_per_hour"], 0.1) for r in rows]
        y = [max(r["test_neg_fa_per_hour"], 0.1) for r in rows]
        ax[0].plot(x, y, "o-", label=name)
        ax[1].plot([r["threshold"] for r in rows], [100 * r["test_hit_rate"] for r in rows], "o-", label=name)
    ax[0].plot([0.1, 100], [0.1, 100], "k:", lw=1, label="prediction = held out")
    ax[0].set(xscale="log", yscale="log", xlabel="validation FA/h (keyword-free, 5.97 h; 0 drawn at 0.1)",
              ylabel="held-out festival FA/h (1.11 h)", title="does validation predict the held-out FA rate?")
    ax[1].set(xlabel="threshold", ylabel="held-out festival keywords found, clean (%)", title="hits at those thresholds")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="hours of validation-voice speech for the threshold choice; "
                                 "'select': read programs / checkpoints on it")
    ap.add_argument("banks", help="banks directory, or 'select'")
    ap.add_argument("sets")
    ap.add_argument("models", nargs="*", help="with select: model directories (their last + step_* checkpoints) "
                    "or .essm programs")
    ap.add_argument("--family", default="festival", type=V.fold_name, help="the fold: its held-out family, or held-out voices (e.g. festival:ked_diphone,festival:cmu_us_slt_arctic_hts; voices.fold_name)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tags", default=",".join(DEFAULT_TAGS), help="calibration sets to build (c|p + e/r/k/f/g, "
                    "see calib.TAG_GROUPS; e.g. cf,cg,pf,pg: the recorded validation voices of a '~' fold)")
    ap.add_argument("--only-family", default=None, choices=V.FAMILIES,
                    help="calibration banks of this family's validation voices only")
    ap.add_argument("--recorded-cap", type=float, default=None, help="with select: every pick also keeps the "
                    "recorded validation speakers' keyword-free false accepts/h <= this (kws-eval --recorded-fa-target)")
    ap.add_argument("--recorded-voices", default=None, metavar="VOICES", help="with select and --recorded-cap: "
                    "only the keyword-free validation sets spoken by these voices' speakers count for that cap "
                    "(e.g. festival:cmu_us_slt_arctic_hts,flite:slt; default: every all-recorded-voice set)")
    ap.add_argument("--speaker-cap", type=float, default=None, metavar="FA_H", help="with select: every pick also "
                    "keeps the --speaker-quantile quantile over validation speakers (one keyword-free set per speaker; "
                    "pooled sets left out) of false accepts/h <= this (kws-eval --speaker-fa-target)")
    ap.add_argument("--speaker-quantile", type=float, default=0.8, metavar="Q", help="with --speaker-cap: the "
                    "ceil(Q*n)-th smallest of the n speakers' rates is capped (0 < Q <= 1; 0.8 of 6-8: second-worst)")
    ap.add_argument("--cache", default="runs/kws2/cal_programs", help="with select: compiled checkpoints")
    ap.add_argument("--out", default="runs/kws2/cal_select.jsonl", help="with select: one JSON line per program")
    ap.add_argument("--test", action="store_true", help="with select: add the held-out clean / 10 dB curves "
                    "(reporting only)")
    ap.add_argument("--fa-on", default="all", choices=L.FA_ON, help="with select: what the false-accept caps "
                    "count: 'all' = keyword streams (confusions) + keyword-free speech, 'neg' = keyword-free only")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.speaker_cap is not None and not a.speaker_cap >= 0:
        ap.error(f"--speaker-cap must be >= 0 false accepts per hour, got {a.speaker_cap}")
    if not 0 < a.speaker_quantile <= 1:
        ap.error(f"--speaker-quantile must be in (0, 1], got {a.speaker_quantile}")
    if a.banks == "select":
        try:
            select(a.sets, a.models, a.cache, a.out, a.family, test=a.test, fa_on=a.fa_on, recorded_cap=a.recorded_cap,
                   recorded_voices=a.recorded_voices, speaker_cap=a.speaker_cap, speaker_quantile=a.speaker_quantile)
        except (FileNotFoundError, ValueError) as e:
            ap.error(str(e))
        return 0
    tags = tuple(t.strip() for t in a.tags.split(",") if t.strip())
    bad = [t for t in tags if len(t) != 2 or t[0] not in "cp" or t[1] not in TAG_GROUPS]
    if bad:
        ap.error(f"unknown --tags {bad}: c|p followed by one of {sorted(TAG_GROUPS)}")
    build_banks(a.banks, a.family, a.workers, a.only_family)
    for p in build_calib_sets(a.banks, a.sets, a.family, a.workers, tags):
        log.info("wrote %s", p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
