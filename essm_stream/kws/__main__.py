"""`python -m essm_stream.kws data|train|eval ...`: shorthand for `essm-stream kws-data|kws-train|kws-eval`."""
import sys

from essm_stream.cli import main as cli_main

NAMES = ("data", "train", "eval")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in NAMES:
        print(f"usage: python -m essm_stream.kws {{{','.join(NAMES)}}} [--help] ...", file=sys.stderr)
        return 2
    return cli_main([f"kws-{argv[0]}", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
