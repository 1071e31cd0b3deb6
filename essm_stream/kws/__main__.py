"""`python -m essm_stream.kws data|train|eval ...`: the kws-* subcommands without the top-level CLI."""
import argparse
import importlib
import logging
import sys

NAMES = {"data": "kws_data", "train": "kws_train", "eval": "kws_eval"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m essm_stream.kws")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, mod_name in NAMES.items():
        mod = importlib.import_module(f"essm_stream.commands.{mod_name}")
        sp = sub.add_parser(name, help=mod.HELP)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from essm_stream.errors import ESSMError
    try:
        return int(a._run(a) or 0)
    except ESSMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
