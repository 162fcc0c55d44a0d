"""The launcher (a script without .py) is inside what ruff and mypy --strict check."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_ruff_and_mypy_include_the_launcher() -> None:
    """pyproject.toml names launcher/launch for ruff (extend-include) and mypy (files)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "launcher/launch" in config["tool"]["ruff"]["extend-include"]
    assert "launcher/launch" in config["tool"]["mypy"]["files"]
    assert config["tool"]["mypy"]["strict"] is True
