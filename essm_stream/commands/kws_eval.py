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


def run(a):
    import json
    from pathlib import Path

    from essm_stream.kws.report import evaluate_all, stream_table
    from essm_stream.sweep import format_table

    b = None
    if a.baseline and Path(a.baseline).is_file():
        j = json.loads(Path(a.baseline).read_text())
        b = j.get("baseline", j).get("acc")          # kws-train's results.json, or the baseline's own
    r = evaluate_all(a.data, a.program, a.out, baseline_acc=b, set_threshold=not a.keep_threshold)
    print(format_table({"ES-SSM (engine)": r["sweep"]}))
    print(format_table({"ES-SSM (engine)": r["sweep"]}, metric="retention"))
    print(f"threshold (chosen on the training-voice stream): {r['threshold']}")
    print(stream_table(r["stream"]))
    print(f"wrote {a.out}/eval.json and {a.out}/kws_eval.png")
    return 0
