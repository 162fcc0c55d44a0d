"""The microVM image build is reproducible: it runs on the host, where the Debian archive is
reachable (the lab has no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgw.sandbox import image

pytestmark = pytest.mark.network


def test_image_build_is_reproducible(tmp_path: Path) -> None:
    """Two builds from the same packages give byte-identical vmlinux and base.cpio."""
    first, _ = image.build(tmp_path / "a")
    second, _ = image.build(tmp_path / "b")
    assert first.manifest["files"] == second.manifest["files"]
    assert first.base_cpio.read_bytes() == second.base_cpio.read_bytes()
