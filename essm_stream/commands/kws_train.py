"""essm-stream kws-train: train the keyword ES-SSM (+ TC-ResNet8 baseline), sweep K, compile, bundle."""
HELP = "train the keyword ES-SSM on `kws-data` output, sweep K, compile with frontend and budget profile"


def add_arguments(p):
    p.add_argument("--data", default="runs/kws/data", help="the directory `essm-stream kws-data` wrote")
    p.add_argument("--out", default="runs/kws/model")
    p.add_argument("--steps", type=int, default=3400)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="skip the TC-ResNet8 baseline")
    p.add_argument("--baseline-epochs", type=int, default=6)
    p.add_argument("--install", action="store_true",
                   help="copy the compiled program to essm_stream/assets/kws_default.essm (the bundled model)")


def run(a):
    import json

    from essm_stream.kws.train import KWSTrainConfig, train_all
    from essm_stream.sweep import format_table

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
