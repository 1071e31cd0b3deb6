"""`essm-stream` console entry point: dispatches to essm_stream.commands.<name>.

`main(argv)` returns the exit code (it never raises SystemExit, --help included). Exit codes: 0
success; 2 bad arguments or bad input (argparse errors, the package's ESSMError family,
the bridge's ConfigError / ProtocolError), always as one line on stderr; 1 an environment failure
(a file system error, a lost serial link) as one line; 130 interrupted. `-vv` shows the traceback
of errors that are reported as one line. A command module that fails to import is an error of the
whole CLI (exit 1, naming the module), never a command silently missing.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .commands import COMMANDS


class CommandImportError(ImportError):
    """A module under essm_stream.commands cannot be imported or cannot build its arguments."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the line breaks of a command's description."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line: `essm-stream CMD: error: ... (see --help)`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(msg) -> str:
    return " ".join(str(msg).split())


def _command_of(argv) -> str | None:
    """The subcommand argv names (its first token that is not an option), or None."""
    names = {name for name, _ in COMMANDS}
    for tok in argv:
        if not tok.startswith("-"):
            return tok if tok in names else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser. Every command module is imported (one that fails fails the CLI); with
    `only`, only that command's arguments are built (others' add_arguments may import a lot:
    `sim` imports the MuJoCo loop's module, ~0.07 s of every start)."""
    from . import __version__
    p = _Parser(
        prog="essm-stream",
        description="Train an Elastic Spectral SSM once, compile it, and stream it at any spectral budget K.")
    p.add_argument("--version", action="version", version=f"essm-stream {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, mod_name in COMMANDS:
        full = f"essm_stream.commands.{mod_name}"
        try:
            mod = importlib.import_module(full)
            sp = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                                formatter_class=_HelpFormatter)
            if only is None or only == name:
                mod.add_arguments(sp)
        except Exception as e:    # an ImportError, or add_arguments importing something missing
            raise CommandImportError(f"cannot load the `{name}` command ({full}): "
                                     f"{type(e).__name__}: {_one_line(e)}") from e
        sp.set_defaults(_run=mod.run)
    return p


def _expected_errors():
    """(usage errors -> exit 2, environment errors -> exit 1) as tuples of exception classes. The
    bridge and controllers are leaves that cannot import essm_stream: their families are caught here,
    looked up after the fact (an error of a package the command never imported cannot have occurred,
    and importing both on every start cost ~0.03 s)."""
    from .errors import ESSMError
    usage, env = [ESSMError], [OSError]
    if "firmware_bridge" in sys.modules:
        try:
            from firmware_bridge.errors import BridgeError, ConfigError as BridgeConfigError, ProtocolError
            usage += [BridgeConfigError, ProtocolError]
            env.append(BridgeError)
        except ImportError:
            pass
    if "controllers" in sys.modules:
        try:
            from controllers.errors import ControlError
            usage.append(ControlError)
        except ImportError:
            pass
    return tuple(usage), tuple(env)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        parser = build_parser(only=_command_of(argv))
    except CommandImportError as e:
        print(f"essm-stream: error: {e}", file=sys.stderr)
        return 1
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:          # --help / --version (0) or a one-line argument error (2): a return code
        return 0 if e.code is None else int(e.code)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + 1, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"essm-stream {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        usage, env = _expected_errors()
        if not isinstance(e, usage + env + (ModuleNotFoundError,)) or args.verbose >= 2:
            raise
        if isinstance(e, usage):
            print(f"essm-stream {args.command}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        if isinstance(e, env):
            print(f"essm-stream {args.command}: error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
            return 1
        top = (e.name or "").split(".")[0]   # an optional dependency of this command (torch, librosa, ...)
        if args.verbose >= 2 or not top or top in ("essm_stream", "controllers", "firmware_bridge", "sims"):
            raise
        extra = {"torch": "train", "sklearn": "train", "librosa": "train", "flint": "train", "mpmath": "train",
                 "onnx": "bench", "onnxruntime": "bench"}.get(top)
        how = f"pip install 'essm-stream[{extra}]'" if extra else f"pip install {top}"
        print(f"essm-stream {args.command}: error: this command needs the package {top!r}, which is not "
              f"installed ({how})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
