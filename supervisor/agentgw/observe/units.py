"""Unit states read over D-Bus, for planning."""

from __future__ import annotations

from pathlib import Path

from agentgw.errors import AgentgwError


def systemd_here() -> bool:
    """True when systemd is PID 1 of this (possibly lab) machine (sd_booted()'s test)."""
    return Path("/run/systemd/system").is_dir()


def check_systemd_here() -> None:
    """Refuse commands that drive systemd where it is not PID 1."""
    if not systemd_here():
        raise AgentgwError(
            "systemd is not running here",
            hint="run on the host that runs the gateways (or inside 'agentgw lab')",
        )


def unit_states(names: list[str]) -> dict[str, tuple[str, str]]:
    """ActiveState and UnitFileState of each unit, in one ListUnitsByNames-style read."""
    from agentgw.bus import Systemd

    with Systemd() as sd:
        return sd.unit_states(names)
