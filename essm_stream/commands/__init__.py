"""One module per `essm-stream` subcommand.

Each module defines HELP (one line), `add_arguments(parser)` and `run(args) -> int`. Modules import
only argparse-level things at the top: heavy imports (torch, numba) happen inside `run`, so that
`essm-stream --help` is instant and the runtime commands never import torch.
"""

# (subcommand, module under essm_stream.commands); a module that fails to import fails the whole CLI.
COMMANDS = [
    ("train", "train"),
    ("sweep", "sweep"),
    ("ablate", "ablate"),
    ("compile", "compile"),
    ("warmup", "warmup"),
    ("bench", "bench"),
    ("run", "run"),
    ("profile", "profile"),
    ("control-eval", "control_eval"),
    ("demo", "demo"),
    ("sim", "sim"),
    ("kws-data", "kws_data"),
    ("kws-train", "kws_train"),
    ("kws-eval", "kws_eval"),
    ("analyze", "analyze"),
]
