"""Argument types and early checks shared by every `essm-stream` subcommand (one copy of each).

argparse types raise ArgumentTypeError, which the CLI turns into one line and exit 2 before any
work starts. The checks that need more than the argument text (is CUDA there, is the output
writable, is this K within the program's K̄) raise the package's errors (exit 2, one line) and are
called at the top of `run`, before the long work.

Budgets: a list of K is parsed by `int_list(lo=1)`; checking it against a program's K̄ is
`essm_stream.errors.check_budget`, the one budget check of the package.
"""
from __future__ import annotations

import argparse
import math


def int_list(lo: int | None = None, hi: int | None = None, *, allow_empty: bool = False):
    """argparse type: "1,2,4" -> [1, 2, 4]; every value in [lo, hi] when given."""
    def parse(text: str) -> list[int]:
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        if not parts and not allow_empty:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        bad = [v for v in vals if (lo is not None and v < lo) or (hi is not None and v > hi)]
        if bad:
            rng = f"in [{lo}, {hi}]" if lo is not None and hi is not None else \
                f">= {lo}" if lo is not None else f"<= {hi}"
            raise argparse.ArgumentTypeError(f"every value must be {rng}, got {bad[0]} in {text!r}")
        return vals
    parse.__name__ = "int_list"          # argparse names the type in its messages
    return parse


def choice_list(choices):
    """argparse type: "a,b" -> ["a", "b"], every item one of `choices`."""
    choices = tuple(choices)

    def parse(text: str) -> list[str]:
        items = [p.strip() for p in str(text).split(",") if p.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list from {', '.join(choices)}")
        bad = [i for i in items if i not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad[0]!r}; choose from {', '.join(choices)}")
        return items
    parse.__name__ = "choice_list"
    return parse


def _number(kind, lo=None, hi=None, lo_open=False, hi_open=False):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if kind is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}, got {text}")
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise argparse.ArgumentTypeError(f"must be {'<' if hi_open else '<='} {hi}, got {text}")
        return v
    parse.__name__ = kind.__name__
    return parse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(int, lo=1)(text)


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(int, lo=0)(text)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _number(float, lo=0.0, lo_open=True)(text)


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(float, lo=0.0)(text)


def probability(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    return _number(float, lo=0.0, hi=1.0)(text)


def fraction(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    return _number(float, lo=0.0, hi=1.0, lo_open=True)(text)



def check_device(name: str) -> None:
    """Refuse a torch device that this machine does not have (before any data is built)."""
    from essm_stream.errors import ConfigError

    if name in (None, "auto", "cpu"):
        return
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"--device {name!r} is not a torch device ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):
        raise ConfigError(f"--device {name!r}: expected auto, cpu or cuda[:N]")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name}: MPS is not available on this machine")


def check_outputs(*files, dirs=()) -> None:
    """Check every given output file (and directory) can be written, before the long work.
    None / '' entries are skipped (an optional output that was not asked for)."""
    from essm_stream.fileio import check_writable, check_writable_dir

    for what, path in files:
        if path:
            check_writable(path, what)
    for what, path in dirs:
        if path:
            check_writable_dir(path, what)


def check_inputs(*files, dirs=()) -> None:
    """Refuse a missing input file or directory now, with its option name, not deep inside the work."""
    import os

    from essm_stream.errors import DataFileError

    for what, path in files:
        if path and not os.path.isfile(path):
            raise DataFileError(f"{what} {path!r} does not exist or is not a file")
    for what, path in dirs:
        if path and not os.path.isdir(path):
            raise DataFileError(f"{what} {path!r} does not exist or is not a directory")


def check_control_eval_args(a) -> None:
    """control-eval's arguments are declared in sims/control_eval.py, whose run checks the numbers
    (period, duration, deadline factor, miss target, workers); checked here, before any trace is
    replayed or load process started: the outputs, the input files, and the live mode's lists."""
    import os

    from essm_stream.errors import ConfigError

    if getattr(a, "live", False):
        ncpu = os.cpu_count() or 1
        if not 0 <= a.core < ncpu:
            raise ConfigError(f"--core must be in [0, {ncpu - 1}] on this machine, got {a.core}")
        for name, parse, text in (("scenarios", choice_list(("step", "bursts", "random")), a.scenarios),
                                  ("fixed-ks", int_list(lo=1), a.fixed_ks)):
            try:
                if text is not None:
                    parse(text)
            except argparse.ArgumentTypeError as e:
                raise ConfigError(f"--{name}: {e}") from None
    check_inputs(("--program", a.program), ("--sweep", a.sweep))
    check_outputs(("--json", getattr(a, "json", None)), dirs=[("--out", a.out)])


KWS_DATA_FILES = {"train": ("features.npz", "frontend.json"),
                  "eval": ("features.npz", "frontend.json", "stream_val.npz", "stream_test.npz")}


def check_kws_data(data_dir: str, use: str) -> None:
    """Refuse a keyword data directory that `essm-stream kws-data` did not (fully) write."""
    import os

    from essm_stream.errors import DataFileError

    if not os.path.isdir(data_dir):
        raise DataFileError(f"--data {data_dir!r} does not exist or is not a directory: build it with "
                            f"`essm-stream kws-data --out {data_dir}`")
    missing = [f for f in KWS_DATA_FILES[use] if not os.path.isfile(os.path.join(data_dir, f))]
    if missing:
        raise DataFileError(f"--data {data_dir!r} lacks {', '.join(missing)}: it is not (completely) written by "
                            f"`essm-stream kws-data --out {data_dir}`")
