"""Helpers of the config tests: write an etc tree under a temp root, run the real entry point."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

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


