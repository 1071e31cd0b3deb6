"""`essm-stream` console entry point: dispatches to essm_stream.commands.<name>."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .commands import COMMANDS


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the line breaks of a command's description."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(
        prog="essm-stream",
        description="Train an Elastic Spectral SSM once, compile it, and stream it at any spectral budget K.")
    p.add_argument("--version", action="version", version=f"essm-stream {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod_name in COMMANDS:
        try:
            mod = importlib.import_module(f"essm_stream.commands.{mod_name}")
        except ModuleNotFoundError as e:
            if e.name == f"essm_stream.commands.{mod_name}":
                continue
            raise
        sp = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                            formatter_class=_HelpFormatter)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + 1, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from .errors import ESSMError
    try:
        return int(args._run(args) or 0)
    except ESSMError as e:
        print(f"essm-stream {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
