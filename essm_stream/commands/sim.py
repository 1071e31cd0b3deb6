"""essm-stream sim: the bundled ES-SSM pendulum policy in a fixed-rate MuJoCo loop (sims/robot_sim.py)."""
HELP = "balance MuJoCo double pendulums with the bundled ES-SSM policy: K sweep, peers, load, fleets, energy"
DESCRIPTION = """Run the bundled ES-SSM policy (imitation of an LQR expert from joint positions only, noisy and
delayed) in a fixed-rate control loop: a command that misses its deadline never reaches the actuator.
Prints success / cost per budget K, the peers (memoryless MLP, stacked MLP, GRU), and the fleet under
CPU load for fixed K, the latency and predictive controllers and an oracle; per-robot cost vs fleet
size; a mission-energy budget. Needs the [sim] extra (mujoco, gymnasium). See docs/SIMS.md."""


def add_arguments(p):
    from sims.robot_sim import add_arguments as add
    add(p)


def run(a):
    from sims.robot_sim import check_args, run_from_args

    from ._args import check_inputs, check_outputs
    check_args(a)
    check_inputs(("--policy", a.policy), ("--peers", a.peers), dirs=[("--bundle", a.bundle)])
    check_outputs(("--json", a.json), dirs=[("--plots", a.plots)])
    return run_from_args(a)
