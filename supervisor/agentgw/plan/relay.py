"""Each profile's sandbox socket, made by systemd: ``agentgw-sandbox-relay@<p>.socket``.

``apply`` writes the instance's drop-in with the profile's group (``host.user(p)``: agent-<p>,
or the shared user in convenience mode, which the unit cannot derive from ``%i``), then
enables and starts the socket unit; ``apply --prune`` stops and disables it. The broker does
not need to restart: the relay passes it each connection (:mod:`agentgw.sandbox.relay`).
"""

from __future__ import annotations

from collections.abc import Mapping

from agentgw.model.actions import Action, UnitAction, keep_running
from agentgw.paths import relay_socket_unit

HEADER = "# Written by agentgw apply: the group of this profile's sandbox socket.\n"


def relay_service(profile: str) -> str:
    return relay_socket_unit(profile).removesuffix(".socket") + ".service"


def render_relay_dropin(group: str) -> str:
    return f"{HEADER}[Socket]\nSocketGroup={group}\n"


def relay_units(profile: str) -> list[str]:
    """The units ``apply`` observes for the profile's sandbox socket."""
    return [relay_socket_unit(profile), relay_service(profile)]


def plan_relay_units(
    profile: str, units: Mapping[str, tuple[str, str]] | None, *, changed: bool
) -> list[Action]:
    """Enable and start the profile's socket unit; restart it when its group changed."""
    if units is None:
        return []
    unit = relay_socket_unit(profile)
    return keep_running(unit, units.get(unit, ("", "")), enable_why="the profile's sandbox socket",
                        restart_why="its socket's group changed" if changed else None)


def prune_relay_units(profile: str, units: Mapping[str, tuple[str, str]] | None) -> list[Action]:
    """Stop the removed profile's relay and socket; disable the socket."""
    if units is None:
        return []
    ops: list[Action] = []
    for unit in (relay_service(profile), relay_socket_unit(profile)):
        active, enabled = units.get(unit, ("", ""))
        if active not in ("", "inactive", "failed"):
            ops.append(UnitAction(verb="stop", unit=unit, why="profile removed"))
        if enabled == "enabled":
            ops.append(UnitAction(verb="disable", unit=unit, why="profile removed"))
    return ops
