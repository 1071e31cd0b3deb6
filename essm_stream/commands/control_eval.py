"""essm-stream control-eval: closed-loop budget controllers vs fixed K, ondemand and an oracle."""
HELP = "evaluate budget controllers on the real engine under a real co-running CPU load (plots, table)"
DESCRIPTION = """Run the engine in a periodic loop under load scenarios (step change, bursts, random)
produced by spinner processes the harness starts and stops itself, once per controller and per fixed
K; report deadline-miss rate, mean K, expected accuracy (vs a clairvoyant oracle), power, settling
and overshoot, and plot K / latency / load over time. See docs/CONTROL.md."""


def add_arguments(p):
    from sims.control_eval import add_arguments as add
    add(p)


def run(a):
    from essm_stream.commands._args import check_control_eval_args
    from sims.control_eval import run_from_args

    check_control_eval_args(a)
    return run_from_args(a)
