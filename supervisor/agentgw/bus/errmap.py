"""One map from D-Bus errors to agentgw errors.

pystemd raises a subclass of ``DBusBaseError`` per well-known D-Bus error name and keeps the name
only on the base class (subclasses get ``err_name == ''``), so the name is recovered from the
class here. Messages arrive as bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pystemd import dbusexc

from agentgw.errors import AgentgwError, Exit

# The class pystemd picks for each error name, turned back into the name.
_NAMES: dict[type[BaseException], str] = {
    dbusexc.DBusNoSuchUnitError: "org.freedesktop.systemd1.NoSuchUnit",
    dbusexc.DBusAccessDeniedError: "org.freedesktop.DBus.Error.AccessDenied",
    dbusexc.DBusInteractiveAuthorizationRequiredError: (
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
    ),
    dbusexc.DBusAuthFailedError: "org.freedesktop.DBus.Error.AuthFailed",
    dbusexc.DBusTimeoutError: "org.freedesktop.DBus.Error.Timeout",
    dbusexc.DBusTimedOutError: "org.freedesktop.DBus.Error.TimedOut",
    dbusexc.DBusNoReplyError: "org.freedesktop.DBus.Error.NoReply",
    dbusexc.DBusInvalidArgsError: "org.freedesktop.DBus.Error.InvalidArgs",
    dbusexc.DBusUnknownPropertyError: "org.freedesktop.DBus.Error.UnknownProperty",
    dbusexc.DBusUnknownInterfaceError: "org.freedesktop.DBus.Error.UnknownInterface",
    dbusexc.DBusUnknownMethodError: "org.freedesktop.DBus.Error.UnknownMethod",
    dbusexc.DBusUnknownObjectError: "org.freedesktop.DBus.Error.UnknownObject",
    dbusexc.DBusServiceUnknownError: "org.freedesktop.DBus.Error.ServiceUnknown",
    dbusexc.DBusNoServerError: "org.freedesktop.DBus.Error.NoServer",
    dbusexc.DBusDisconnectedError: "org.freedesktop.DBus.Error.Disconnected",
    dbusexc.DBusConnectionRefusedError: "System.Error.ECONNREFUSED",
    dbusexc.DBusFileNotFoundError: "System.Error.ENOENT",
}

_UNREACHABLE = {
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NoServer",
    "org.freedesktop.DBus.Error.Disconnected",
    "System.Error.ECONNREFUSED",
    "System.Error.ENOENT",
}
_DENIED = {
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
    "org.freedesktop.DBus.Error.AuthFailed",
}
_TIMEOUT = {
    "org.freedesktop.DBus.Error.Timeout",
    "org.freedesktop.DBus.Error.TimedOut",
    "org.freedesktop.DBus.Error.NoReply",
}


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def error_name(exc: BaseException) -> str:
    """The D-Bus error name behind a pystemd exception (``''`` when there is none)."""
    for cls in type(exc).__mro__:
        if cls in _NAMES:
            return _NAMES[cls]
    return _text(getattr(exc, "err_name", ""))


def bus_error(exc: BaseException, action: str, unit: str | None = None) -> AgentgwError:
    """Turn a pystemd D-Bus error raised while doing ``action`` (on ``unit``) into an AgentgwError.

    ``action`` reads as a verb phrase ("start", "read properties of"), so messages come out as
    ``cannot start web.service: unit web.service not found``.
    """
    name = error_name(exc)
    detail = _text(getattr(exc, "err_message", "")).strip() or str(exc)
    target = f"{action} {unit}" if unit else action
    if name == "org.freedesktop.systemd1.NoSuchUnit":
        return AgentgwError(
            f"cannot {target}: {detail.rstrip('.')}",
            hint="check the name with 'systemctl list-unit-files'; "
            "a new or changed unit file needs a daemon-reload",
        )
    if name == "org.freedesktop.systemd1.UnitMasked":
        return AgentgwError(
            f"cannot {target}: unit {unit or '?'} is masked",
            hint=f"systemctl unmask {unit}" if unit else "systemctl unmask <unit>",
        )
    if name == "org.freedesktop.systemd1.UnitExists":
        return AgentgwError(
            f"cannot {target}: a unit named {unit or '?'} is already loaded",
            hint="stop it and reset its failed state first, or pick another name",
        )
    if name in _DENIED:
        return AgentgwError(
            f"cannot {target}: access denied by systemd ({detail})",
            hint="run agentgw as root",
        )
    if name in _TIMEOUT:
        return AgentgwError(
            f"cannot {target}: systemd did not answer in time ({detail})",
            hint="check 'systemctl status' and 'journalctl -u init.scope' for a stuck manager",
        )
    if name in _UNREACHABLE:
        return AgentgwError(
            f"cannot {target}: the system bus or systemd is not reachable ({detail})",
            hint="agentgw needs systemd as PID 1 with D-Bus; in tests run inside the lab",
        )
    if name in (
        "org.freedesktop.DBus.Error.UnknownProperty",
        "org.freedesktop.DBus.Error.UnknownInterface",
    ):
        return AgentgwError(
            f"cannot {target}: {detail}",
            hint="the unit type has no such property (e.g. Service properties on a socket unit)",
        )
    return AgentgwError(
        f"cannot {target}: {detail}" + (f" [{name}]" if name else ""),
        hint="see 'journalctl -u init.scope' for what systemd said",
        code=Exit.FAILED,
    )


@contextmanager
def mapped(action: str, unit: str | None = None) -> Iterator[None]:
    """Re-raise any pystemd D-Bus error in the block as an AgentgwError (chained)."""
    try:
        yield
    except dbusexc.DBusBaseError as exc:
        raise bus_error(exc, action, unit) from exc
