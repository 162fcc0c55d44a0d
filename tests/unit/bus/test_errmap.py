"""pystemd's D-Bus exceptions map to one AgentgwError each, with the unit and a hint."""

from __future__ import annotations

import pytest
from pystemd import dbusexc

from agentgw.bus.errmap import bus_error, error_name, mapped
from agentgw.errors import AgentgwError


def test_error_name_is_recovered_from_the_class() -> None:
    """pystemd drops err_name on its subclasses; the name comes back from the class."""
    exc = dbusexc.DBusError(-2, b"org.freedesktop.systemd1.NoSuchUnit", b"Unit a not found.")
    assert (type(exc).__name__, exc.err_name) == ("DBusNoSuchUnitError", "")
    assert "org.freedesktop.systemd1.NoSuchUnit" == error_name(exc)


@pytest.mark.parametrize(
    ("name", "message", "expected", "hint"),
    [
        (
            b"org.freedesktop.systemd1.NoSuchUnit",
            b"Unit a.service not found.",
            "cannot start a.service: Unit a.service not found",
            "daemon-reload",
        ),
        (
            b"org.freedesktop.DBus.Error.AccessDenied",
            b"Access denied",
            "cannot start a.service: access denied by systemd (Access denied)",
            "root",
        ),
        (
            b"org.freedesktop.DBus.Error.NoReply",
            b"Timeout",
            "cannot start a.service: systemd did not answer in time (Timeout)",
            "stuck",
        ),
        (
            b"org.freedesktop.systemd1.UnitMasked",
            b"Unit a.service is masked.",
            "cannot start a.service: unit a.service is masked",
            "unmask",
        ),
        (
            b"org.freedesktop.systemd1.JobTypeNotApplicable",
            b"Job type reload is not applicable.",
            "cannot start a.service: Job type reload is not applicable. "
            "[org.freedesktop.systemd1.JobTypeNotApplicable]",
            "journalctl",
        ),
    ],
)
def test_bus_error_messages(name: bytes, message: bytes, expected: str, hint: str) -> None:
    """Each family of D-Bus error reads as one line naming the action and the unit."""
    error = bus_error(dbusexc.DBusError(-1, name, message), "start", "a.service")
    assert expected == error.message
    assert hint in error.hint


def test_mapped_chains_the_original_error() -> None:
    """Inside ``mapped`` a pystemd error becomes an AgentgwError with the original as cause."""
    original = dbusexc.DBusError(-13, b"org.freedesktop.DBus.Error.AccessDenied", b"no")
    with pytest.raises(AgentgwError) as caught, mapped("stop", "b.service"):
        raise original
    assert original is caught.value.__cause__
