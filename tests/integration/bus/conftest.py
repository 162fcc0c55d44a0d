"""Fixtures for the bus/ integration tests: one systemd connection, unit files, a test user.

They run inside the lab (a throwaway overlay root), and still undo what they create so a
second run in the same lab starts clean.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentgw.bus import Systemd
from agentgw.run import run

UNIT_DIR = Path("/etc/systemd/system")

WriteUnit = Callable[[str, str], str]


@pytest.fixture(params=[True, False], ids=["private-socket", "system-bus"])
def sd(request: pytest.FixtureRequest) -> Iterator[Systemd]:
    """Each test runs on both kinds of connection bus/ makes: systemd's private socket (root)
    and the system bus through dbus-daemon."""
    with Systemd(private=request.param) as connection:
        assert request.param == connection.private
        yield connection


@pytest.fixture
def tag() -> str:
    """A fresh suffix for unit and user names, so tests never meet each other's leftovers."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def write_unit(sd: Systemd) -> Iterator[WriteUnit]:
    """Write unit files (then daemon-reload); on teardown stop their units and remove them."""
    written: list[str] = []

    def write(name: str, text: str) -> str:
        (UNIT_DIR / name).write_text(text)
        written.append(name)
        sd.daemon_reload()
        return name

    yield write
    for name in written:
        pattern = name.replace("@.", "@*.")
        for unit in sd.list_units([pattern]):
            sd.stop(unit.name)
            if sd.unit_properties(unit.name, names=["ActiveState"])["ActiveState"] == "failed":
                sd.reset_failed(unit.name)
        (UNIT_DIR / name).unlink()
    if written:
        sd.daemon_reload()


@pytest.fixture
def test_user(tag: str) -> Iterator[tuple[str, int]]:
    """A system user without a home or shell (name, uid), deleted afterwards."""
    name = f"bt{tag}"
    run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
    try:
        yield name, int(run(["id", "-u", name]).stdout)
    finally:
        run(["userdel", name])
