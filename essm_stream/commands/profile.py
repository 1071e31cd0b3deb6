"""essm-stream profile: measure a program's budget profile on this machine and store it in the file."""
HELP = "measure accuracy / latency / energy per K and write the budget profile into a program file"
DESCRIPTION = """Measure the budget profile of a compiled program on this machine and store it in the
program's metadata (budget_profile): step latency per K from timing the engine, expected accuracy per
K from a sweep JSON (`essm-stream sweep --json`) or else a synthetic saturating curve, and energy per
step from RAPL / hwmon when readable, else a power model (idle + dynamic W x step latency)."""


def add_arguments(p):
    from essm_stream.commands._args import int_list, nonneg_float, positive_float, positive_int

    p.add_argument("program", help="a program file written by `essm-stream compile` (rewritten in place unless --out)")
    p.add_argument("--sweep", help="accuracy per K from this sweep JSON (keys K, acc)")
    p.add_argument("--ks", type=int_list(lo=1), default=None,
                   help="comma-separated budgets in [1, K̄] (default: 1,2,3,4,6,8,12,16,20,24,28,32 up to K̄)")
    p.add_argument("--steps", type=positive_int, default=200, help="timed steps per K")
    p.add_argument("--period", type=positive_float, default=None,
                   help="pace the timed steps at this period in seconds, as the control loop will run")
    p.add_argument("--energy", choices=("auto", "model"), default="auto",
                   help="auto: RAPL or hwmon if readable, else the power model; model: always the model")
    p.add_argument("--idle-w", type=nonneg_float, default=2.0, help="power model: idle power (W)")
    p.add_argument("--dyn-w", type=nonneg_float, default=3.0, help="power model: extra power while stepping (W)")
    p.add_argument("--out", help="write the profiled program here instead of in place")
    p.add_argument("--json", help="also write the profile to this JSON file")


def run(a):
    from controllers.errors import ControlError

    from ..errors import ConfigError
    try:
        return _run(a)
    except ControlError as e:          # controllers is a leaf with its own family: one CLI line
        raise ConfigError(str(e)) from None


def _run(a):
    import json

    import numpy as np

    from controllers.profile import build_profile
    from controllers.telemetry import PowerModel, open_energy_source

    from ..commands._args import check_outputs
    from ..engine import StreamEngine
    from ..errors import check_budget
    from ..fileio import atomic_write_bytes, read_json
    from ..program import StreamProgram

    check_outputs(("program file", a.out or a.program), ("--json", a.json))
    if a.sweep:
        read_json(a.sweep, "sweep JSON")      # size / depth / syntax checked before the timing starts
    prog = StreamProgram.load(a.program)
    if a.ks is None:
        ks = [k for k in (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 28, 32) if k <= prog.k_max] or [prog.k_max]
    else:
        ks = [check_budget(k, prog.k_max, "--ks value") for k in a.ks]
    pm = PowerModel(idle_w=a.idle_w, dyn_w=a.dyn_w)
    src = None
    if a.energy == "auto":
        src = open_energy_source(idle_w=a.idle_w, dyn_w=a.dyn_w)
        if isinstance(src, PowerModel):
            src = None
    eng = StreamEngine(prog, batch=1, dtype=np.float32)
    prof = build_profile(eng, sweep=a.sweep, ks=ks, steps=a.steps, period_s=a.period,
                         power_model=pm, energy_source=src)
    prog.set_budget_profile(prof, save=a.out or True)
    print("| K | accuracy | latency (µs) | p99 (µs) | energy/step (µJ) |\n|---|---|---|---|---|")
    for i, k in enumerate(prof["K"]):
        e = prof["energy_j"][i]
        print(f"| {k} | {prof['accuracy'][i]:.4f} | {prof['latency_s'][i] * 1e6:.1f} | "
              f"{prof['latency_p99_s'][i] * 1e6:.1f} | {'–' if e is None else f'{e * 1e6:.2f}'} |")
    print(f"accuracy: {prof['source']['accuracy']}\nenergy: {prof['source']['energy']}")
    print(f"wrote the budget profile into {a.out or a.program}")
    if a.json:
        atomic_write_bytes(a.json, json.dumps(prof, indent=1).encode())
    return 0
