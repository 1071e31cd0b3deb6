"""#12 "honest docs": every `essm-stream ...` command in README.md and docs/*.md parses with the real
argument parser (README's `essm-stream compile CKPT OUT` did not: compile takes -o).

Command lines in code blocks must parse whole (optional parts written `[--opt X]` are taken as given);
inline mentions in prose (`essm-stream sweep --json`) must name a real subcommand and real options."""
import re
import shlex
from pathlib import Path

import pytest

from essm_stream.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _code_block_commands(text: str):
    """(line number, argv) of every essm-stream command in fenced or indented code blocks."""
    out, fenced, lines = [], False, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            fenced = not fenced
            i += 1
            continue
        code = fenced or line.startswith("    ")
        s = line.strip()
        if s.startswith("$ "):
            s = s[2:]
        start = i
        if code and s.startswith("essm-stream "):
            while s.endswith("\\") and i + 1 < len(lines):    # continuation lines
                i += 1
                s = s[:-1] + " " + lines[i].strip()
            s = re.sub(r"\s#.*$", "", s)                        # a trailing comment
            s = s.replace("[", " ").replace("]", " ")           # optional parts: parse them too
            out.append((start + 1, shlex.split(s)[1:]))
        i += 1
    return out


def _inline_mentions(text: str):
    """(line number, argv) of `essm-stream ...` code spans in prose."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in re.finditer(r"`essm-stream ([^`]+)`", line):
            out.append((n, shlex.split(m.group(1).replace("[", " ").replace("]", " "))))
    return out


def _cases():
    for doc in DOCS:
        text = doc.read_text()
        for n, argv in _code_block_commands(text):
            yield pytest.param("block", argv, id=f"{doc.name}:{n}")
        for n, argv in _inline_mentions(text):
            yield pytest.param("inline", argv, id=f"{doc.name}:{n}:inline")


CASES = list(_cases())


def _subparsers(parser):
    import argparse
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a.choices
    raise AssertionError("no subcommands")


def test_the_docs_have_commands():
    assert sum(1 for c in CASES if c.values[0] == "block") >= 15


@pytest.mark.parametrize("kind, argv", CASES)
def test_documented_command_parses(kind, argv, capsys):
    parser = build_parser()
    subs = _subparsers(parser)
    if argv and argv[0] in ("--help", "-h", "--version"):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        assert e.value.code == 0, capsys.readouterr().err
        return
    while argv and re.fullmatch(r"-v+|--verbose", argv[0]):     # global options before the command
        argv = argv[1:]
    assert argv and argv[0] in subs, f"`essm-stream {' '.join(argv)}`: no subcommand {argv[:1]}"
    if kind == "inline":
        opts = {o for a in subs[argv[0]]._actions for o in a.option_strings}
        bad = [a.split("=")[0] for a in argv[1:] if a.startswith("-") and a.split("=")[0] not in opts]
        assert not bad, f"`essm-stream {' '.join(argv)}`: {argv[0]} has no option {bad}"
        return
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        if e.code == 0:                               # a documented `--help`
            return
        pytest.fail(f"`essm-stream {' '.join(argv)}` does not parse (exit {e.code}): {capsys.readouterr().err.strip()}")
