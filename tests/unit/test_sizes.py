"""Size rules of issue 18 that ruff does not count: a module of agentgw has at most 450 lines and
a function at most 60 (ruff's PLR0913/PLR0915/C901 in pyproject.toml hold the rest)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "supervisor" / "agentgw"
MODULE_LINES = 450
FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "data" not in p.relative_to(PACKAGE).parts)


def long_functions(source: str, limit: int) -> list[tuple[str, int]]:
    """(name, lines) of every function or method longer than ``limit`` lines, decorators
    excluded."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append((node.name, length))
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small(path: Path) -> None:
    """The module has at most MODULE_LINES lines and no function over FUNCTION_LINES."""
    source = path.read_text()
    assert len(source.splitlines()) <= MODULE_LINES
    assert long_functions(source, FUNCTION_LINES) == []


def test_long_function_is_found() -> None:
    """The measure counts a function's whole body, so a clean scan means something."""
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    assert long_functions(f"def f():\n{body}\n", FUNCTION_LINES) == [("f", 62)]
