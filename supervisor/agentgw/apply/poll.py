"""Waiting on a gateway after its restart: ready, aligned, settled; and why it did not start."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from agentgw.bus import ServiceStatus, StartFacts, UnitInfo
from agentgw.errors import AgentgwError
from agentgw.fsio import read_json
from agentgw.model.profile import Profile
from agentgw.model.status import StartFailure
from agentgw.observe.startup import READY_RECORD, ReadyRecord, journal_tail, judge_start
from agentgw.observe.status import judge_alignment, read_environ, read_release
from agentgw.paths import Layout, unit_name


class Control(Protocol):
    """What promote, rollback and restart need from bus/ (the Systemd object)."""

    def service_status(self, name: str) -> ServiceStatus: ...
    def list_units(self, patterns: Sequence[str], states: Sequence[str] = ()) -> list[UnitInfo]: ...
    def main_pid(self, name: str) -> int: ...
    def restart(self, name: str, *, timeout: float = 90.0) -> str: ...
    def start(self, name: str, *, timeout: float = 90.0) -> str: ...
    def stop(self, name: str, *, timeout: float = 90.0) -> str: ...
    def reset_failed(self, name: str) -> None: ...
    def start_facts(self, name: str) -> StartFacts: ...
    def enable(self, names: list[str]) -> None: ...


class Failed(Exception):
    """A step proving a release failed; the caller rolls back.

    ``start`` says why the unit did not start, when that was the step (with its log lines).
    """

    def __init__(self, message: str, start: StartFailure | None = None) -> None:
        super().__init__(message)
        self.start = start


def wait_ready(
    sd: Control, layout: Layout, profile: Profile, since: float, timeout: float
) -> ServiceStatus:
    """Active, and the launcher's record names the new MainPID."""
    name, unit = profile.name, unit_name(profile.name)
    deadline = time.monotonic() + timeout
    launch = layout.logs(name) / "launch.json"
    while True:
        status = sd.service_status(unit)
        if status.active_state in ("failed", "inactive") or status.sub_state == "auto-restart":
            raise start_failed(
                sd, layout, profile, since, f"unit {status.active_state}/{status.sub_state}"
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


def check_aligned(layout: Layout, profile: Profile, status: ServiceStatus) -> str:
    """The process ``status`` names runs exactly the release ``current`` points at."""
    name = profile.name
    verdict = judge_alignment(
        current=str(layout.current(name)),
        unit=status,
        unit_problem="",
        release=read_release(layout.current(name), layout.releases),
        environ=read_environ(status.main_pid),
        launch=read_json(layout.logs(name) / "launch.json"),
    )
    if verdict.state != "yes":
        raise Failed(f"alignment: {verdict.reason}")
    return verdict.reason


def hold_settled(sd: Control, profile: Profile, ready: ServiceStatus, sha: str) -> str:
    """Hold ``health.settle_s``: the process must stay (same MainPID, no restart) and
    answer again at the end, so a release that dies right after its first answer is
    rolled back instead of committed."""
    from agentgw.observe.health import wait_healthy

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
    health = wait_healthy(
        str(profile.listen.host), profile.listen.port, profile.health.path,
        timeout=profile.health.timeout_s, expect_sha=sha,
    )
    if not health.ok:
        raise Failed(f"health check after settling {settle:g}s: {health.reason}")
    return f"pid {ready.main_pid} kept running {settle:g}s and answers again"


def start_failed(sd: Control, layout: Layout, profile: Profile, since: float, what: str) -> Failed:
    """The unit did not start: why (readiness waited for, what was seen, the fix), with
    its last journal lines."""
    name = profile.name
    try:
        facts = sd.start_facts(unit_name(name))
    except AgentgwError as exc:
        return Failed(f"{what}: {exc.message}")
    ready = ReadyRecord.parse(read_json(layout.logs(name) / READY_RECORD).data)
    failure = judge_start(profile, facts, ready)
    start = facts.main_start_usec or int(since * 1e6)
    failure = failure.model_copy(update={"log": journal_tail(name, since_usec=start)})
    return Failed(f"{what}: {failure.render()}", failure)
