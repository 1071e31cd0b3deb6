"""essm-stream kws-eval: keyword programs on streams.

--loso (the issue-9 evaluation): every held-out synthesizer family's (or speaker fold's) streams
(keywords alone and in sentences at every SNR present in --sets: clean / 20 / 10 / 5 dB, keyword-free
speech) through the fold's ES-SSM program(s) at K = 4 and 32 (several --models folders: one table),
the previous bundled model, the TC-ResNet8 baseline (if trained; needs torch) and pocketsphinx, with
thresholds chosen on validation voices only (or pocketsphinx's given by --ps-threshold); writes loso.json,
loso.md and kws_det.png; pocketsphinx's detections are cached per set file and threshold (--ps-cache).
--speaker-fa-target caps the 0.8-quantile (--speaker-quantile) validation speaker's false accepts/h (one
keyword-free set per speaker); test conditions holding several speakers get a per-speaker table.
--verify pocketsphinx adds each program as the first stage of a cascade with a second-stage verifier
(kws/verify.py), its threshold pair chosen on validation by the same rule.
Without --loso: the espeak-ng clip sweep and stream metrics of one program (no torch).
"""
HELP = "evaluate keyword programs: leave-one-synthesizer-out streams (--loso), or one program on espeak-ng data"


def add_arguments(p):
    p.add_argument("--loso", action="store_true", help="leave-one-synthesizer-family-out evaluation")
    p.add_argument("--sets", default="runs/kws2/sets", help="with --loso: `python -m essm_stream.kws.loso` output")
    p.add_argument("--models", default=["runs/kws2/models"], nargs="+", metavar="[NAME=]DIR",
                   help="with --loso: folder(s) with one sub-folder per held-out fold holding kws.essm (and "
                   "tcresnet.safetensors); several folders are scored on the same streams in one table, named NAME "
                   "(default: the folder's name); the first is the primary (pocketsphinx, gate, previous model)")
    p.add_argument("--tcresnet", default=None, metavar="DIR",
                   help="with --loso: a folder holding <fold>/tcresnet.safetensors (python -m "
                   "essm_stream.kws.baseline_stream); default: the first --models folder")
    p.add_argument("--families", default="festival,flite,espeak")
    p.add_argument("--hold-out", default=None, metavar="VOICES",
                   help="with --loso: one speaker fold instead of --families: held-out voices, e.g. "
                   "festival:ked_diphone,festival:cmu_us_slt_arctic_hts (sets and models are named after the fold, "
                   "ho-festival.ked+festival.slt)")
    p.add_argument("--fa-target", type=float, default=2.0, help="false accepts/h the validation threshold aims at")
    p.add_argument("--fa-on", default="all", choices=("all", "neg"),
                   help="what the validation false-accept budget counts: 'all' = keyword streams (keyword "
                   "confusions) + keyword-free speech, 'neg' = keyword-free speech only (the issue's target); "
                   "the other rates are reported beside the pick either way")
    p.add_argument("--recorded-fa-target", type=float, default=None, metavar="FA_H",
                   help="with --loso: the threshold must also keep the false accepts per hour of the recorded "
                   "validation speakers' keyword-free speech (sets whose voices are all recorded people) <= FA_H")
    p.add_argument("--recorded-voices", default=None, metavar="VOICES",
                   help="with --recorded-fa-target: only the keyword-free validation sets spoken by these recorded "
                   "voices' speakers count for that cap (e.g. festival:cmu_us_slt_arctic_hts,flite:slt: one native "
                   "speaker through two engines); default: every set whose voices are all recorded people")
    p.add_argument("--speaker-fa-target", type=float, default=None, metavar="FA_H",
                   help="with --loso: the threshold must also keep the --speaker-quantile quantile over validation "
                   "speakers of their keyword-free false accepts per hour <= FA_H (speakers from each keyword-free "
                   "validation set's voices; a set pooling several speakers cannot be split and counts in the "
                   "pooled cap only: build one set per speaker)")
    p.add_argument("--speaker-quantile", type=float, default=None, metavar="Q",
                   help="with --speaker-fa-target: which speaker is capped, the ceil(Q*n)-th smallest of the n "
                   "speakers' rates (0 < Q <= 1; default 0.8: of 6-8 speakers the second-worst; 1: the worst)")
    p.add_argument("--no-pocketsphinx", action="store_true")
    p.add_argument("--ps-threshold", type=float, default=None,
                   help="with --loso: pocketsphinx's keyword threshold, chosen outside this run by a declared "
                   "validation rule (no validation sweep; loso.md says so)")
    p.add_argument("--ps-val-limit-s", type=float, default=None,
                   help="with --loso: cut each clean validation set to its first seconds in pocketsphinx's sweep")
    p.add_argument("--ps-neg-s", type=float, default=600.0,
                   help="with --loso: seconds of each keyword-free test set pocketsphinx decodes (0 = all)")
    p.add_argument("--ps-workers", type=int, default=2, help="with --loso: pocketsphinx processes")
    p.add_argument("--ps-cache", default=None, metavar="DIR",
                   help="with --loso: pocketsphinx detections per (set file, threshold, cut), read and written "
                   "(default OUT/ps_cache): a later run decodes only what is new")
    p.add_argument("--verify", default=None, choices=("pocketsphinx",),
                   help="with --loso: also score each program as the first stage of a cascade with this second-stage "
                   "verifier (kws/verify.py: pocketsphinx asked whether the detected keyword is in the window around "
                   "each detection); the (first-stage, verifier) threshold pair is chosen on validation by the same rule")
    p.add_argument("--verify-thresholds", default=None, metavar="LIST",
                   help="with --verify: the verifier thresholds tried, comma-separated numbers in [-5, 0] and 'none' "
                   "(no verification); default: verify.VERIFY_THRESHOLDS")
    p.add_argument("--verify-cache", default=None, metavar="DIR",
                   help="with --verify: verifier scores per (set file, window), read and written (default OUT/verify_cache)")
    p.add_argument("--old-program", default="", help="with --loso: a previous keyword program to score on the "
                   "same streams (e.g. the espeak-ng-only model that was bundled before)")
    p.add_argument("--data", default="runs/kws/data", help="the directory `essm-stream kws-data` wrote")
    p.add_argument("--program", default="runs/kws/model/kws.essm")
    p.add_argument("--out", default=None, help="output folder (default runs/kws2/eval with --loso, else runs/kws/eval)")
    p.add_argument("--baseline", default="runs/kws/model/results.json",
                   help="results.json of kws-train (or a baseline .json with 'acc'), for the TC-ResNet8 accuracy")
    p.add_argument("--keep-threshold", action="store_true",
                   help="do not store the threshold chosen on the validation stream in the program")


def baseline_accuracy(path):
    """The TC-ResNet8 accuracy in kws-train's results.json ({"baseline": {"acc": ...}}) or in a
    baseline's own JSON ({"acc": ...}); None when the file does not exist."""
    import math
    from pathlib import Path

    from essm_stream.errors import DataFileError
    from essm_stream.fileio import read_json

    if not path or not Path(path).is_file():
        return None
    j = read_json(path, "--baseline JSON")
    j = j.get("baseline", j) if isinstance(j, dict) else j
    b = j.get("acc") if isinstance(j, dict) else "missing"
    if b is None:
        return None
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not (math.isfinite(b) and 0 <= b <= 1):
        raise DataFileError(f"--baseline {path!r}: expected {{'acc': accuracy in [0, 1]}} (or under 'baseline'), "
                            f"got {str(j)[:80]}")
    return float(b)


def _cap_error(a, cap: str, modifier: str) -> str | None:
    """What is wrong with a second validation cap (--speaker-fa-target, --recorded-fa-target) and the
    option that narrows it, or None."""
    def flag(name):
        return "--" + name.replace("_", "-")
    value = getattr(a, cap)
    if value is not None and not value >= 0:
        return f"{flag(cap)} must be >= 0 false accepts per hour, got {value}"
    if getattr(a, modifier) is not None and value is None:
        return f"{flag(modifier)} needs {flag(cap)}"
    return None


def run(a):
    from pathlib import Path

    from essm_stream.commands._args import check_inputs, check_kws_data, check_outputs

    if a.loso:
        import logging

        from essm_stream.kws.loso_eval import run_all
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        from essm_stream.kws.voices import fold_name
        try:
            families = (fold_name(a.hold_out),) if a.hold_out else tuple(a.families.split(","))
        except ValueError as e:
            print(f"error: --hold-out: {e}")
            return 2
        from essm_stream.kws.loso_eval import model_dirs
        try:
            models = model_dirs(a.models)
        except ValueError as e:
            print(f"error: {e}")
            return 2
        if a.ps_neg_s < 0 or a.ps_workers < 1 or (a.ps_val_limit_s is not None and a.ps_val_limit_s <= 0):
            print("error: --ps-neg-s must be >= 0, --ps-workers >= 1, --ps-val-limit-s > 0")
            return 2
        for cap, modifier in (("speaker_fa_target", "speaker_quantile"), ("recorded_fa_target", "recorded_voices")):
            err = _cap_error(a, cap, modifier)
            if err:
                print(f"error: {err}")
                return 2
        if a.speaker_quantile is not None and not 0 < a.speaker_quantile <= 1:
            print(f"error: --speaker-quantile must be in (0, 1], got {a.speaker_quantile}")
            return 2
        if a.recorded_voices is not None:
            from essm_stream.kws.loso import recorded_speakers
            try:
                recorded_speakers(a.recorded_voices)
            except ValueError as e:
                print(f"error: --recorded-voices: {e}")
                return 2
        verify = None
        if a.verify_thresholds is not None or a.verify_cache is not None:
            if not a.verify:
                print("error: --verify-thresholds / --verify-cache need --verify")
                return 2
        if a.verify:
            from essm_stream.kws.verify import parse_thresholds
            try:
                vth = None if a.verify_thresholds is None else parse_thresholds(a.verify_thresholds)
            except ValueError as e:
                print(f"error: --verify-thresholds: {e}")
                return 2
            verify = {"kind": a.verify, "thresholds": vth, "workers": a.ps_workers, "cache": a.verify_cache}
        out = a.out or "runs/kws2/eval"
        check_outputs(dirs=[("--out", out)])
        ps = {"threshold": a.ps_threshold, "val_limit_s": a.ps_val_limit_s, "neg_s": a.ps_neg_s or None,
              "workers": a.ps_workers}
        if a.ps_cache:
            ps["cache"] = a.ps_cache
        try:
            r = run_all(a.sets, models, out, families, pocketsphinx=not a.no_pocketsphinx,
                        fa_target=a.fa_target, old_program=a.old_program or None, fa_on=a.fa_on,
                        tcresnet_dir=a.tcresnet, ps=ps, recorded_fa_target=a.recorded_fa_target,
                        recorded_voices=a.recorded_voices, speaker_fa_target=a.speaker_fa_target,
                        speaker_quantile=0.8 if a.speaker_quantile is None else a.speaker_quantile, verify=verify)
        except FileNotFoundError as e:             # e.g. --recorded-fa-target without recorded validation sets
            print(f"error: {e}")
            return 2
        if not r["families"]:
            print(f"error: no fold had both a program under {next(iter(models.values()))}/<fold>/kws.essm and sets in {a.sets}")
            return 2
        print(Path(out, "loso.md").read_text())
        print(f"wrote {out}/loso.json, {out}/loso.md and {out}/kws_det.png")
        return 0

    from essm_stream.kws.report import evaluate_all, stream_table
    from essm_stream.sweep import format_table

    a.out = a.out or "runs/kws/eval"
    check_kws_data(a.data, "eval")
    check_inputs(("--program", a.program))
    check_outputs(dirs=[("--out", a.out)])
    b = baseline_accuracy(a.baseline)
    r = evaluate_all(a.data, a.program, a.out, baseline_acc=b, set_threshold=not a.keep_threshold)
    print(format_table({"ES-SSM (engine)": r["sweep"]}))
    print(format_table({"ES-SSM (engine)": r["sweep"]}, metric="retention"))
    print(f"threshold (chosen on the training-voice stream): {r['threshold']}")
    print(stream_table(r["stream"]))
    print(f"wrote {a.out}/eval.json and {a.out}/kws_eval.png")
    return 0
