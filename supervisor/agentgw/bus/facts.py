"""What the manager reports, as typed records with str values (no pystemd types)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentgw.errors import AgentgwError


@dataclass(frozen=True)
class UnitInfo:
    """One row of ListUnitsByPatterns."""

    name: str
    description: str
    load_state: str
    active_state: str
    sub_state: str
    path: str


@dataclass(frozen=True)
class ServiceStatus:
    """What ``agentgw status`` shows of a service unit."""

    name: str
    load_state: str
    active_state: str
    sub_state: str
    main_pid: int
    # ExecMainStartTimestamp: microseconds since the epoch, 0 when never started.
    started_usec: int
    n_restarts: int
    # MemoryCurrent in bytes; None when systemd does not account it.
    memory_bytes: int | None
    invocation_id: str


@dataclass(frozen=True)
class StartFacts:
    """What systemd knows of a service's last start: why it failed, if it did.

    ``result`` is the Service's Result (success, timeout, exit-code, signal, core-dump,
    start-limit-hit, resources, oom-kill, ...); ``main_code`` is "exited", "killed", "dumped"
    or "" (the main process has not ended) and ``main_status`` its exit code or signal.
    """

    active_state: str
    sub_state: str
    result: str
    main_code: str
    main_status: int
    main_pid: int
    status_text: str
    # ExecMainStartTimestamp / ExecMainExitTimestamp: microseconds since the epoch, 0 if none.
    main_start_usec: int
    main_exit_usec: int
    n_restarts: int


# siginfo's si_code of the main process's end (ExecMainCode).
MAIN_CODES = {1: "exited", 2: "killed", 3: "dumped"}


@dataclass(frozen=True)
class TransientRun:
    """The outcome of a command run to completion in a transient service."""

    unit: str
    result: str
    # "exited", "killed" or "dumped"; status is the exit code or the signal number.
    code: str
    status: int
    stdout: str
    stderr: str
    # Service properties asked for with ``read_back``, read before the unit was forgotten.
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int | None:
        return self.status if self.code == "exited" else None


def as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AgentgwError(f"systemd sent {value!r} where an integer was expected")
    return value


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise AgentgwError(f"systemd sent {value!r} where a string was expected")
    return value
