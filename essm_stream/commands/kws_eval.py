"""essm-stream kws-eval: clip accuracy per K and long-stream metrics of a keyword program (no torch)."""
HELP = "evaluate a keyword program: clip accuracy per K (engine), stream hit rate / FA per hour / latency"


def add_arguments(p):
    p.add_argument("--data", default="runs/kws/data", help="the directory `essm-stream kws-data` wrote")
    p.add_argument("--program", default="runs/kws/model/kws.essm")
    p.add_argument("--out", default="runs/kws/eval")
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


def run(a):
    from essm_stream.commands._args import check_inputs, check_kws_data, check_outputs
    from essm_stream.kws.report import evaluate_all, stream_table
    from essm_stream.sweep import format_table

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
