"""Packages point one way (DESIGN.md, "Top-level layout ... and the direction of imports"):

    firmware_bridge, controllers (leaves)  <-  essm_stream (core, runtime, kws app, CLI)  <-  sims, bench

Every import statement is read with `ast`, at any depth (module level, inside functions, inside
try/except), so a cycle hidden in a function-level import fails here too. The CLI
(essm_stream/cli.py, essm_stream/commands/, and the `__main__` entry points) is the roof and may import sims.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"essm_stream", "controllers", "firmware_bridge", "sims", "bench", "tests"}

# package -> project packages it must never import
FORBIDDEN = {
    "controllers": PROJECT - {"controllers"},
    "firmware_bridge": PROJECT - {"firmware_bridge"},
    "essm_stream": {"sims", "bench", "tests"},
}
# third-party modules a leaf may import (everything else must be the standard library)
LEAF_THIRD_PARTY = {"controllers": {"numpy"}}
CLI = ("essm_stream/cli.py", "essm_stream/commands/")


def imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute top-level module) for every import in `source` of dotted `module`."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                   # relative: resolve against the package
                base = module.split(".")[:-node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def violations(path: Path, package: str) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    module = rel[:-3].replace("/", ".").removesuffix(".__init__")
    bad = []
    for line, name in imports(path.read_text(), module if not rel.endswith("__init__.py") else module + ".x"):
        top = name.split(".")[0]
        roof = rel.startswith(CLI) or rel.endswith("/__main__.py")     # entry points are the roof too
        if top in FORBIDDEN[package] and not (roof and top == "sims"):
            bad.append(f"{rel}:{line} imports {name} ({package} may not import {top})")
        if package == "essm_stream" and not roof and name.startswith(("essm_stream.cli", "essm_stream.commands")):
            bad.append(f"{rel}:{line} imports {name} (only the CLI may import the CLI)")
        allowed = LEAF_THIRD_PARTY.get(package)
        if allowed is not None and top not in PROJECT and top not in allowed and top not in sys.stdlib_module_names:
            bad.append(f"{rel}:{line} imports {name} ({package} may import the standard library and {sorted(allowed)} only)")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_follow_the_design_direction(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    bad = [v for f in files for v in violations(f, package)]
    assert not bad, "imports against DESIGN.md's direction:\n" + "\n".join(bad)


def test_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The check itself can fail: a lazy import inside a function and a relative import that climbs
    out of the package are both found."""
    src = ("import numpy as np\n"
           "def f():\n"
           "    try:\n"
           "        from essm_stream.engine import StreamEngine\n"
           "    except ImportError:\n"
           "        import torch\n")
    found = [n for _, n in imports(src, "controllers.profile")]
    assert found == ["numpy", "essm_stream.engine", "torch"]
    assert [n for _, n in imports("from ..essm_stream import x\n", "controllers.sub.mod")] == ["controllers.essm_stream"]
    assert [n for _, n in imports("from . import errors\n", "controllers.control")] == ["controllers"]
    pkg = tmp_path / "controllers"
    pkg.mkdir()
    (pkg / "bad.py").write_text(src)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    bad = violations(pkg / "bad.py", "controllers")
    assert any("essm_stream" in b for b in bad) and any("torch" in b for b in bad)
