"""essm-stream ablate: the paper's four variants (§6.1) trained alike on one task, swept over K."""
HELP = "train base / gate_only / dropout_only / essm alike on one task and compare their budget sweeps"
DESCRIPTION = """Train the four ablation variants of the paper (§6.1) with identical data, seed and
schedule, sweep each over the runtime budget K, and write one plot and one markdown table:
  base          Eq. 6, no gate, trained at K̄ only (truncated at test time)
  gate_only     input-adaptive gate, trained at K̄ only
  dropout_only  no gate, budget dropout during training
  essm          gate + budget dropout
All train options of `essm-stream train` apply to every variant."""

VARIANTS = ("base", "gate_only", "dropout_only", "essm")


def add_arguments(p):
    from essm_stream.commands import train as train_cmd

    from essm_stream.commands._args import choice_list, int_list

    train_cmd.add_arguments(p)
    p.set_defaults(out="runs/ablation")
    p.add_argument("--ks", type=int_list(lo=1), default="1,2,3,4,6,8,12,16,24,32",
                   help="comma-separated budgets, each in [1, --k-max]")
    p.add_argument("--variants", type=choice_list(VARIANTS), default=",".join(VARIANTS))
    p.add_argument("--markdown", help="also write the table (and how it was made) to this .md file")


def run(a):
    import json
    import shlex
    import sys
    from pathlib import Path

    from essm_stream.fileio import atomic_write_bytes
    from essm_stream.commands._args import check_outputs
    from essm_stream.commands.train import check_args, train_config_from_args
    from essm_stream.errors import check_budget
    from essm_stream.sweep import budget_sweep, format_table, plot_sweeps
    from essm_stream.tasks import make_task
    from essm_stream.train import pick_device, train

    check_args(a)
    check_outputs(("--markdown", a.markdown))
    variants = a.variants
    ks = [check_budget(k, a.k_max, "--ks value") for k in a.ks]
    root = Path(a.out)
    base_tc = train_config_from_args(a)
    ds = make_task(base_tc.task, seed=base_tc.seed, **base_tc.task_kwargs)  # one data set for all
    results, meta = {}, {}
    for v in variants:
        a.variant, a.out = v, str(root / v)
        tc = train_config_from_args(a)
        s = train(tc, ds=ds, progress=not a.no_progress)
        results[v] = budget_sweep(s["model"], ds.X_test, ds.y_test, ks, device=pick_device(a.device),
                                  progress=not a.no_progress)
        meta[v] = {"seconds": s["seconds"]}
    table = format_table(results)
    print(table)
    plot = root / "ablation.png"
    plot_sweeps(results, plot, title=f"{ds.name}: ablation")
    atomic_write_bytes(root / "ablation.json", json.dumps({"results": results, "meta": meta}, indent=2).encode())
    print(f"wrote {plot} and {root / 'ablation.json'}")
    if a.markdown:
        cmd = "essm-stream " + " ".join(shlex.quote(x) for x in sys.argv[1:])
        md = (f"## Ablation on {ds.name}\n\nMade by `{cmd}`.\n\nTest accuracy (%) per runtime budget K, "
              f"one training run per variant ({base_tc.steps} steps, seed {base_tc.seed}).\n\n{table}\n")
        atomic_write_bytes(a.markdown, md.encode())
        print(f"wrote {a.markdown}")
    return 0
