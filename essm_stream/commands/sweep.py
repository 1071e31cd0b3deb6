"""essm-stream sweep: accuracy of one trained model at every runtime budget K."""
HELP = "budget sweep of a trained checkpoint: accuracy, retention, sweet spot, collapse boundary"


def add_arguments(p):
    from essm_stream.commands._args import int_list

    p.add_argument("checkpoint", help="a model.safetensors written by `essm-stream train`")
    p.add_argument("--ks", type=int_list(lo=1), default="1,2,3,4,6,8,12,16,24,32",
                   help="comma-separated budgets, each in [1, K̄]")
    p.add_argument("--data", help="evaluate on this .npz (X, y) instead of the training task's test split")
    p.add_argument("--plot", help="write the accuracy-vs-K curve to this PNG")
    p.add_argument("--json", help="write the sweep to this JSON file")
    p.add_argument("--device", default="auto")


def dataset_for(meta, data=None):
    """The test split of the task a checkpoint was trained on, regenerated from its seed."""
    from essm_stream.errors import ConfigError
    from essm_stream.tasks import load_npz, make_task

    if data:
        return load_npz(data)
    tc = meta["train"].get("train_config")
    if not tc:
        raise ConfigError("this checkpoint does not record its task; pass --data FILE.npz")
    return make_task(tc["task"], seed=tc["seed"], **tc["task_kwargs"])


def run(a):
    import json

    from essm_stream.checkpoint import load_checkpoint
    from essm_stream.commands._args import check_device, check_inputs, check_outputs
    from essm_stream.errors import check_budget
    from essm_stream.fileio import atomic_write_bytes
    from essm_stream.sweep import budget_sweep, format_table, plot_sweeps
    from essm_stream.train import pick_device

    check_device(a.device)
    check_inputs(("--data", a.data))
    check_outputs(("--plot", a.plot), ("--json", a.json))
    device = pick_device(a.device)
    model, meta = load_checkpoint(a.checkpoint, device=device)
    ks = [check_budget(k, model.cfg.k_max, "--ks value") for k in a.ks]
    ds = dataset_for(meta, a.data)
    r = budget_sweep(model, ds.X_test, ds.y_test, ks, device=device)
    name = f"{ds.name} {model.cfg.variant}"
    print(format_table({name: r}))
    print(f"full accuracy {100 * r['full_acc']:.2f}%  sweet spot K={r['sweet_spot']}  "
          f"collapse boundary K={r['collapse_boundary']}")
    if a.plot:
        plot_sweeps({name: r}, a.plot, title=f"{ds.name}: budget sweep")
        print(f"wrote {a.plot}")
    if a.json:
        atomic_write_bytes(a.json, json.dumps(r, indent=2).encode())
    return 0
