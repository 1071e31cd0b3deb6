"""essm-stream bench: run the benchmarks in the repository's bench/ directory."""
HELP = "benchmark the engine against torch eager, naive torch, the numpy reference and ONNX Runtime"
DESCRIPTION = ("Latency per step (median, p99, p99/p50) vs K for the edge and paper configs at B=1 and 32, "
               "peers measured in the same run, machine limits (sgemm, bandwidth) and the roofline fraction. "
               "Needs a source checkout (bench/) and torch; onnx + onnxruntime for the ONNX peer.")


def add_arguments(p):
    from essm_stream.commands._args import nonneg_int

    p.add_argument("--configs", default="edge,paper", help="comma-separated: edge, paper, tiny")
    p.add_argument("--batches", default="1,32", help="comma-separated stream counts B")
    p.add_argument("--ks", default="1,2,4,8,16,32", help="comma-separated budgets")
    p.add_argument("--peers", default="torch,naive,numpy,onnx", help="comma-separated peers to include (or 'none')")
    p.add_argument("--quick", action="store_true", help="few steps per point (minutes -> seconds); numbers are noisy")
    p.add_argument("--steps", type=nonneg_int, default=0, help="timed steps per point for the engine (0: automatic)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--json", help="write all results to this JSON file")
    p.add_argument("--doc", help="write the report (markdown) to this file, e.g. docs/PERFORMANCE.md")
    p.add_argument("--targets", action="store_true",
                   help="print issue 13's targets as PASS / FALL SHORT lines (median and spread over "
                        "interleaved rounds; tuned torch and ONNX Runtime peers; demo cold/warm start)")
    p.add_argument("--reps", type=int, default=7, help="interleaved rounds for --targets and --plots")
    p.add_argument("--no-start", action="store_true", help="with --targets: skip the demo start-up measurement")
    p.add_argument("--no-paper", action="store_true", help="with --targets: skip the paper config")
    p.add_argument("--threads", default="1,2",
                   help="with --targets: thread counts N (comma-separated); for each N > 1 the engine runs with "
                        "threads=N beside torch, ONNX Runtime, sgemm and the read bandwidth on N threads too")
    p.add_argument("--plots", metavar="DIR",
                   help="time vs K, L and B (engine, tuned torch) into DIR/perf_k.png, perf_l.png, perf_b.png")
    p.add_argument("--plot", help="write latency-vs-K plot (PNG) here, e.g. docs/latency_vs_k.png")


def run(a):
    import importlib.util
    import os

    from essm_stream.commands._args import check_outputs, int_list
    from essm_stream.errors import ConfigError

    # bench/bench_engine.py parses these strings itself; they are checked here first, with the CLI's
    # one int_list, so that a bad value fails before minutes of measurement.
    for name in ("batches", "ks", "threads"):
        try:
            int_list(lo=1)(getattr(a, name))
        except Exception as e:
            raise ConfigError(f"--{name}: {e}") from None
    check_outputs(("--json", a.json), ("--doc", a.doc), ("--plot", a.plot))

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "bench", "bench_engine.py")
    if not os.path.isfile(path):
        raise ConfigError(f"benchmarks live in a source checkout: {path} not found")
    spec = importlib.util.spec_from_file_location("essm_bench_engine", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if a.reps < 1:
        raise ConfigError(f"--reps must be >= 1, got {a.reps}")
    return mod.main(a)
