"""Real microVMs: one image for the session, the backend this machine supports, no leftovers.

The image comes from $AGENTGW_SANDBOX_CACHE or the default cache when one is built there, else
it is built into a temp dir (that needs apt to reach the Debian archive).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agentgw.errors import AgentgwError
from agentgw.sandbox import backend, image
from agentgw.sandbox.vm import Machine, host_tsc_khz

DEFAULT_CACHE = Path("/") / image.DEFAULT_CACHE


def _usable(cache: Path) -> bool:
    try:
        image.load(cache)
    except AgentgwError:
        return False
    return True


@pytest.fixture(scope="session")
def sandbox_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86 (make setup installs it)")
    for candidate in (os.environ.get("AGENTGW_SANDBOX_CACHE"), DEFAULT_CACHE):
        if candidate and _usable(Path(candidate)):
            return Path(candidate)
    cache = tmp_path_factory.mktemp("sandbox-cache")
    image.build(cache)
    return cache


@pytest.fixture(scope="session")
def sandbox_image(sandbox_cache: Path) -> image.Image:
    return image.load(sandbox_cache)


@pytest.fixture(scope="session")
def machine(sandbox_image: image.Image, sandbox_cache: Path) -> Machine:
    """The microVM tests run on KVM where it works, else on TCG (whatever backend jobs use)."""
    found = backend.detect(sandbox_image, sandbox_cache, allow_emulation=True)
    return Machine("kvm" if found.backend == "kvm" else "tcg", found.machine,
                   tsc_khz=host_tsc_khz())


def qemu_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if p.name().startswith("qemu-system")]


@pytest.fixture(autouse=True)
def no_qemu_left_behind() -> Iterator[None]:
    """Every test must leave no QEMU of ours running, whatever happened in it."""
    yield
    left = qemu_children()
    for proc in left:
        proc.kill()
    assert left == [], f"QEMU processes left running: {[p.pid for p in left]}"
