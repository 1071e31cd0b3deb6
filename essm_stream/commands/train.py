"""essm-stream train: train an ES-SSM on a generated task or your own .npz, with budget dropout."""
HELP = "train an ES-SSM with budget dropout (CPU, CUDA, or multi-process via torchrun)"
DESCRIPTION = """Train an ES-SSM once at full capacity K̄ with budget dropout.

Tasks: listops (LRA grammar, --max-len), digits / digits_perm (scikit-learn's 8x8 digits read
pixel by pixel), npz (--data FILE.npz with X (N, T, d_in) and y (N,) or (N, T)).
Multi-GPU / multi-process: torchrun --nproc_per_node=N -m essm_stream train ...
--model lru trains the CompreSSM peer (an LRU in the same block) instead; --compress energy=0.99
(or rank=N) --at 0.2,0.4 reduces it in training by balanced truncation (docs/COMPARISON.md).
Writes OUT/model.safetensors (final), OUT/last.safetensors (resumable), OUT/summary.json."""


def add_arguments(p):
    from essm_stream.commands._args import (nonneg_float, nonneg_int, positive_float, positive_int,
                                            probability)

    g = p.add_argument_group("task")
    g.add_argument("--task", default="digits", choices=["listops", "digits", "digits_perm", "npz"])
    g.add_argument("--data", help="the .npz file for --task npz")
    g.add_argument("--max-len", type=positive_int, default=128, help="listops: longest expression in tokens")
    g.add_argument("--n-train", type=positive_int, default=8000, help="listops: training expressions")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="essm", choices=["essm", "lru"],
                   help="essm: the elastic spectral model; lru: the Linear Recurrent Unit peer (no budget K)")
    m.add_argument("--state", type=int, default=64, help="lru: complex state size N per layer")
    m.add_argument("--compress", default=None, metavar="energy=F|rank=N",
                   help="lru: CompreSSM in-training balanced truncation keeping HSV energy F or rank N")
    m.add_argument("--at", default="0.2,0.4", help="lru --compress: fractions of the steps at which to reduce")
    m.add_argument("--variant", default="essm", choices=["essm", "base", "gate_only", "dropout_only"])
    m.add_argument("--d-model", type=positive_int, default=32)
    m.add_argument("--layers", type=positive_int, default=2)
    m.add_argument("--d-gate", type=positive_int, default=32)
    m.add_argument("--k-max", type=positive_int, default=32)
    m.add_argument("--no-mlp", action="store_true")
    m.add_argument("--head", choices=["step", "mean"], default=None,
                   help="default: step for per-step labels; for sequence labels the last-step output")
    m.add_argument("--pool-window", type=positive_int, default=None)
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=positive_int, default=600)
    o.add_argument("--batch-size", type=positive_int, default=64)
    o.add_argument("--lr", type=positive_float, default=3e-3)
    o.add_argument("--weight-decay", type=nonneg_float, default=0.05)
    o.add_argument("--warmup", type=nonneg_int, default=50)
    o.add_argument("--grad-clip", type=nonneg_float, default=1.0)
    o.add_argument("--k-dist", choices=["uniform", "linear", "fixed"], default="uniform",
                   help="budget-dropout distribution of K_train")
    o.add_argument("--k-train", type=positive_int, default=32, help="K_train for --k-dist fixed")
    o.add_argument("--per-step-k", type=probability, default=0.0,
                   help="probability that a minibatch gets a random per-step K schedule")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--no-amp", action="store_true", help="disable autocast on CUDA")
    o.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    r = p.add_argument_group("output")
    r.add_argument("--out", default="runs/model", help="output directory")
    r.add_argument("--eval-every", type=positive_int, default=200)
    r.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors if it exists")
    r.add_argument("--no-progress", action="store_true")


def train_config_from_args(a):
    from essm_stream.train import TrainConfig

    task_kwargs = {}
    if a.task == "listops":
        task_kwargs = dict(max_len=a.max_len, n_train=a.n_train)
    elif a.task == "npz":
        task_kwargs = dict(path=a.data)
    model_kind = getattr(a, "model", "essm")
    compress = {}
    if model_kind == "lru":
        model = dict(d_model=a.d_model, n_layers=a.layers, state=a.state, mlp=not a.no_mlp)
        if a.compress:
            from essm_stream.compressm import CompressRule
            compress = CompressRule.parse(a.compress, a.at).to_dict()
    else:
        if getattr(a, "compress", None):
            from essm_stream.errors import ConfigError
            raise ConfigError("--compress applies to --model lru only")
        model = dict(variant=a.variant, d_model=a.d_model, n_layers=a.layers, d_gate=a.d_gate,
                     k_max=a.k_max, mlp=not a.no_mlp)
    if a.head is not None:
        model["head"] = a.head
    if a.pool_window is not None:
        model["pool_window"] = a.pool_window
    return TrainConfig(task=a.task, task_kwargs=task_kwargs, model=model, steps=a.steps,
                       batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                       warmup_steps=a.warmup, grad_clip=a.grad_clip, seed=a.seed, k_dist=a.k_dist,
                       k_train=a.k_train, per_step_k=a.per_step_k, amp=not a.no_amp, device=a.device,
                       out_dir=a.out, eval_every=a.eval_every, ckpt_every=a.eval_every, resume=a.resume,
                       model_kind=model_kind, compress=compress)


def check_args(a) -> None:
    """Everything that can be checked before data is built and training starts (also used by ablate)."""
    from essm_stream.commands._args import check_device, check_inputs, check_outputs
    from essm_stream.errors import ConfigError

    if a.task == "npz" and not a.data:
        raise ConfigError("--task npz needs --data FILE.npz (X (N, T, d_in), y (N,) or (N, T))")
    if a.data and a.task != "npz":
        raise ConfigError(f"--data is for --task npz; --task {a.task} generates its data")
    check_inputs(("--data", a.data))
    if a.k_dist == "fixed" and a.k_train > a.k_max:
        raise ConfigError(f"--k-train {a.k_train} exceeds --k-max {a.k_max}")
    check_device(a.device)
    check_outputs(dirs=[("--out", a.out)])


def run(a):
    import os

    check_args(a)
    from essm_stream.train import train      # torch: after the checks, which need none

    s = train(train_config_from_args(a), progress=not a.no_progress)
    if int(os.environ.get("RANK", 0)) == 0:
        last = s["history"][-1] if s["history"] else {}
        print(f"trained {s['task']} ({s['variant']}) for {s['steps']} steps in {s['seconds']:.0f} s; "
              f"test accuracy {last.get('acc')}; wrote {a.out}/model.safetensors")
    return 0
