"""Helpers of the config tests: write an etc tree under a temp root, run the real entry point."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from agentgw.cli.main import main

BASE = "mode: cli\nlisten: 127.77.0.2:8080\n"  # lines 1-2; a case's own lines start at 3

Files = Mapping[str, str | bytes]


def write(root: Path, files: Files) -> Path:
    """Create ``root/etc/agentgw`` holding ``files`` (paths relative to it); return that dir."""
    etc = root / "etc" / "agentgw"
    etc.mkdir(parents=True)
    for rel, content in files.items():
        path = etc / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return etc


def agentgw(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console script's ``main()``; return its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out, err = capsys.readouterr()
    code = exit_.value.code
    assert isinstance(code, int)
    return code, out, err
