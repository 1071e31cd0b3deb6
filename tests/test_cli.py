"""Every subcommand answers --help, and the CLI turns the package's errors into a clear message."""
import importlib
import subprocess
import sys

import pytest

from essm_stream.cli import build_parser, main
from essm_stream.commands import COMMANDS


@pytest.mark.parametrize("name, mod", COMMANDS)
def test_every_command_module_imports(name, mod):
    """#12: a command module that fails to import is a failure, not a silently missing command."""
    m = importlib.import_module(f"essm_stream.commands.{mod}")
    assert callable(m.add_arguments) and callable(m.run) and m.HELP


def present_commands():
    return [name for name, _ in COMMANDS]


@pytest.mark.parametrize("name", present_commands())
def test_every_subcommand_has_help(name, capsys):
    assert main([name, "--help"]) == 0
    assert name in capsys.readouterr().out


def test_core_commands_exist():
    assert {"train", "sweep", "ablate"} <= set(present_commands())


def test_help_does_not_import_torch():
    code = "import sys; from essm_stream.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False", "building the CLI must not import torch"


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_package_errors_become_a_clear_message(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["sweep", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "missing.safetensors" in err
    assert build_parser().parse_args(["train", "--steps", "5"]).steps == 5
