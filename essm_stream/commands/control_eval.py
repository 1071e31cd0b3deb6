"""essm-stream control-eval: budget controllers vs fixed K and a clairvoyant oracle, on replayed load traces."""
HELP = "evaluate budget controllers on replayed load traces (default) or live under a real load"
DESCRIPTION = """Replay (default): every controller, every fixed K and the oracle run against the same
recorded per-step slowdowns and telemetry (sims/traces/*.npz, or --replay FILES), for the synthetic,
a measured peaked and a measured monotone accuracy curve; prints miss rate and accuracy vs the oracle
per trace, the issue-16 targets, and writes --json rows. --live runs the engine in a periodic loop
under load processes this harness starts. See docs/CONTROL.md."""


def add_arguments(p):
    from sims.control_eval import add_arguments as add
    add(p)


def run(a):
    from controllers.errors import ControlError
    from essm_stream.commands._args import check_control_eval_args
    from sims.control_eval import run_from_args

    from ..errors import ConfigError
    check_control_eval_args(a)         # outputs, inputs and live-only lists, before any work
    try:
        return run_from_args(a)
    except ControlError as e:          # controllers is a leaf with its own family: one CLI line
        raise ConfigError(str(e)) from None
