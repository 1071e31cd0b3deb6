"""essm-stream kws-train: train the keyword ES-SSM (+ TC-ResNet8 baseline), sweep K, compile, bundle."""
HELP = "train the keyword ES-SSM on `kws-data` output, sweep K, compile with frontend and budget profile"


def add_arguments(p):
    from essm_stream.commands._args import positive_float, positive_int, probability

    p.add_argument("--data", default="runs/kws/data", help="the directory `essm-stream kws-data` wrote")
    p.add_argument("--out", default="runs/kws/model")
    p.add_argument("--steps", type=positive_int, default=3400)
    p.add_argument("--d-model", type=positive_int, default=32)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="skip the TC-ResNet8 baseline")
    p.add_argument("--baseline-epochs", type=positive_int, default=6)
    p.add_argument("--install", action="store_true",
                   help="copy the compiled program to essm_stream/assets/kws_default.essm (the bundled model)")
    g = p.add_argument_group("long clips (stream format; needs `python -m essm_stream.kws.longclips DATA` first)")
    g.add_argument("--long", action="store_true",
                   help="train on the long clips of DATA/long.npz (context before the word, label at the end), "
                        "mixed with the 64-step clips; resumable from OUT/essm/last.safetensors")
    g.add_argument("--init", default="runs/kws/model/essm/model.safetensors",
                   help="checkpoint to start from with --long ('' = from scratch)")
    g.add_argument("--p-short", type=probability, default=0.25, help="share of 64-step minibatches with --long")
    g.add_argument("--max-minutes", type=positive_float, default=1e9, help="with --long: stop (checkpoint kept) after this")


def run(a):
    import json

    from essm_stream.kws.train import (
        KWSTrainConfig,
        LongTrainConfig,
        finish_long,
        train_all,
    )
    from essm_stream.commands._args import check_inputs, check_kws_data, check_outputs
    from essm_stream.sweep import format_table

    check_kws_data(a.data, "train")
    if a.long:
        check_inputs((f"{a.data}/long.npz (make it with `python -m essm_stream.kws.longclips {a.data}`)",
                      f"{a.data}/long.npz"), ("--init", a.init))
    check_outputs(dirs=[("--out", a.out)])
    if a.long:
        lc = LongTrainConfig(init=a.init, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                             p_short=a.p_short, max_minutes=a.max_minutes, d_model=a.d_model)
        r = finish_long(a.data, a.out, lc, install=a.install)
        print(format_table({"ES-SSM": r["essm"]["sweep"]}))
        return 0

    kc = KWSTrainConfig(d_model=a.d_model, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                        eval_every=max(1, a.steps // 3))
    r = train_all(a.data, a.out, kc, install=a.install, baseline=not a.no_baseline,
                  baseline_epochs=a.baseline_epochs)
    print(format_table({"ES-SSM": r["essm"]["sweep"]}))
    if "baseline" in r:
        b = r["baseline"]
        print(f"{b['name']}: {100 * b['acc']:.1f}% ({b['params']} parameters)")
    print(json.dumps({k: v for k, v in r.items() if k != "essm"}, indent=1, default=str))
    return 0
