"""The layering rules hold: checked by import-linter, and private attributes stay private.

Only src/confero/media/aiortc_hooks.py may reach into another object's private attributes (the
aiortc and aioice internals Confero relies on); everywhere else code uses its own (`self._x`).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "confero"

#: The one module that may reach into other objects' private attributes (aiortc's and aioice's).
HOOKS = SRC / "media" / "aiortc_hooks.py"
#: The built-ins that take an attribute's name as a string.
ATTRIBUTE_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}


def is_private(name: str) -> bool:
    """`_name` or `__name` (a name-mangled one), but not a dunder like `__init__`."""
    return name.startswith("_") and name.strip("_") != "" and not (name.startswith("__") and name.endswith("__"))


def is_own(node: ast.expr) -> bool:
    """`self`, `cls` or `super()`: an object's own attributes."""
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def accessed(node: ast.AST) -> tuple[ast.expr, str] | None:
    """(object, attribute name) for `x.name` and `getattr(x, "name")`-like calls, else None."""
    if isinstance(node, ast.Attribute):
        return node.value, node.attr
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ATTRIBUTE_FUNCTIONS
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return node.args[0], node.args[1].value
    return None


def private_accesses(tree: ast.AST) -> list[tuple[int, str]]:
    """Every `x._name` and `getattr(x, "_name")` (or setattr/hasattr/delattr) whose x is not self/cls."""
    found = []
    for node in ast.walk(tree):
        access = accessed(node)
        if access is not None and is_private(access[1]) and not is_own(access[0]):
            found.append((getattr(node, "lineno", 0), ast.unparse(node)))
    return sorted(found)


def test_import_layers() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency"
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_private_attributes_only_in_the_hooks_module() -> None:
    """Outside aiortc_hooks.py, code touches only its own private attributes (self._x, cls._x)."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == HOOKS:
            continue
        for number, text in private_accesses(ast.parse(path.read_text(), str(path))):
            offenders.append(f"{path.relative_to(ROOT)}:{number}: {text}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    "source",
    [
        "pc._dtlsTransport",
        "self.pc._dtlsTransport",
        "sender._RTCRtpSender__encoder",
        "module._helper()",
        'getattr(site, "_server")',
        'getattr(site, "_server", None)',
        'setattr(x, "_y", 1)',
        'hasattr(x, "_y")',
        "super().method()._y",
    ],
)
def test_the_rule_catches(source: str) -> None:
    assert private_accesses(ast.parse(source)), source


@pytest.mark.parametrize(
    "source",
    [
        "self._x",
        "cls._x",
        "self._x = 1",
        "super()._release()",
        "x.__class__",
        "x.__dict__",
        'getattr(x, "__name__")',
        'getattr(x, "public")',
        "getattr(x, name)",
        'getattr(self, "_x")',
        "_local",
        "x.y_",
    ],
)
def test_the_rule_allows(source: str) -> None:
    assert not private_accesses(ast.parse(source)), source


def test_camel_case_wire_names_only_in_schema_modules() -> None:
    wire = re.compile(r"""["'](streamId|takeConfiguration|idMapping|ATTR_ROOM_NAME|webRTCViewerCount)["']""")
    allowed = {"messages.py", "schemas.py", "handlers.py", "jwt.py"}  # jwt.py: Ant Media's claim names
    offenders = [
        str(p.relative_to(ROOT)) for p in SRC.rglob("*.py") if p.name not in allowed and wire.search(p.read_text())
    ]
    assert not offenders, offenders
