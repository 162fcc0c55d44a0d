"""Waiting on a gateway after its restart: ready, aligned, settled; and why it did not start."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from agentgw.bus import ServiceStatus, StartFacts, UnitInfo
from agentgw.errors import AgentgwError
from agentgw.fsio import read_json
from agentgw.model.profile import Profile
from agentgw.model.status import Alignment, HealthAnswer, StartFailure
from agentgw.paths import Layout, unit_name


class Control(Protocol):
    """What promote, rollback and restart need from bus/ (the Systemd object)."""

    def service_status(self, name: str) -> ServiceStatus: ...
    def list_units(self, patterns: Sequence[str], states: Sequence[str] = ()) -> list[UnitInfo]: ...
    def main_pid(self, name: str) -> int: ...
    def restart(
        self, name: str, *, timeout: float = 90.0, meanwhile: Callable[[], None] | None = None
    ) -> str: ...
    def start(self, name: str, *, timeout: float = 90.0) -> str: ...
    def stop(self, name: str, *, timeout: float = 90.0) -> str: ...
    def reset_failed(self, name: str) -> None: ...
    def start_facts(self, name: str) -> StartFacts: ...
    def enable(self, names: list[str]) -> None: ...


class Probe(Protocol):
    """What promote, rollback and restart read of the gateway they restarted. observe/ knows how
    (observe.gateway.GatewayProbe); the command passes one in, so apply and observe, siblings in
    STYLE.md's chain, never import each other."""

    def alignment(self, profile: Profile, status: ServiceStatus) -> Alignment: ...
    def start_failure(
        self, profile: Profile, facts: StartFacts, since_usec: int
    ) -> StartFailure: ...
    def health(self, profile: Profile, expect_sha: str | None) -> HealthAnswer: ...
    def warm_up(self) -> None: ...


class Failed(Exception):
    """A step proving a release failed; the caller rolls back.

    ``start`` says why the unit did not start, when that was the step (with its log lines).
    """

    def __init__(self, message: str, start: StartFailure | None = None) -> None:
        super().__init__(message)
        self.start = start


def wait_ready(
    sd: Control, probe: Probe, layout: Layout, profile: Profile, since: float, timeout: float
) -> ServiceStatus:
    """Active, and the launcher's record names the new MainPID."""
    name, unit = profile.name, unit_name(profile.name)
    deadline = time.monotonic() + timeout
    launch = layout.logs(name) / "launch.json"
    while True:
        status = sd.service_status(unit)
        if status.active_state in ("failed", "inactive") or status.sub_state == "auto-restart":
            raise start_failed(
                sd, probe, profile, since, f"unit {status.active_state}/{status.sub_state}"
            )
        if status.active_state == "active" and status.main_pid:
            record = read_json(launch).data
            if isinstance(record, dict) and record.get("pid") == status.main_pid:
                return status
        if time.monotonic() > deadline:
            raise Failed(
                f"not ready within {timeout:g}s ({status.active_state}/"
                f"{status.sub_state}, no launch record of the new pid)"
            )
        time.sleep(0.02)


def check_aligned(probe: Probe, profile: Profile, status: ServiceStatus) -> str:
    """The process ``status`` names runs exactly the release ``current`` points at."""
    verdict = probe.alignment(profile, status)
    if verdict.state != "yes":
        raise Failed(f"alignment: {verdict.reason}")
    return verdict.reason


def hold_settled(
    sd: Control, probe: Probe, profile: Profile, ready: ServiceStatus, sha: str
) -> str:
    """Hold ``health.settle_s``: the process must stay (same MainPID, no restart) and
    answer again at the end, so a release that dies right after its first answer is
    rolled back instead of committed."""
    unit = unit_name(profile.name)
    settle = profile.health.settle_s
    deadline = time.monotonic() + settle
    while True:
        now = sd.service_status(unit)
        if now.main_pid != ready.main_pid or now.n_restarts != ready.n_restarts:
            raise Failed(
                f"did not settle: pid {ready.main_pid} -> {now.main_pid or 'none'} "
                f"({now.active_state}/{now.sub_state}, restarts {now.n_restarts}) within "
                f"{settle:g}s of its first healthy answer"
            )
        if time.monotonic() >= deadline:
            break
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    health = probe.health(profile, sha)
    if not health.ok:
        raise Failed(f"health check after settling {settle:g}s: {health.reason}")
    return f"pid {ready.main_pid} kept running {settle:g}s and answers again"


def start_failed(sd: Control, probe: Probe, profile: Profile, since: float, what: str) -> Failed:
    """The unit did not start: why (readiness waited for, what was seen, the fix), with
    its last journal lines."""
    try:
        facts = sd.start_facts(unit_name(profile.name))
    except AgentgwError as exc:
        return Failed(f"{what}: {exc.message}")
    failure = probe.start_failure(profile, facts, facts.main_start_usec or int(since * 1e6))
    return Failed(f"{what}: {failure.render()}", failure)
