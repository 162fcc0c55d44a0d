"""The pure status judges: alignment, isolation and last promote from fabricated inputs."""

from __future__ import annotations

import json

import pytest

from agentgw.bus import ServiceStatus
from agentgw.fsio import Read, parse_iso
from agentgw.model.status import ReleaseInfo
from agentgw.observe.isolation import judge_isolation
from agentgw.observe.promotes import last_promotes
from agentgw.observe.status import judge_alignment, parse_environ

CURRENT = "/opt/agent/gateways/api/current"
RELEASE = ReleaseInfo(
    name="3f9c2e1-b", path="/opt/agent/releases/3f9c2e1-b", sha="3f9c2e1", label="b", version=2
)
ENV = Read(data={"PYTHONPATH": CURRENT, "AGENT_PROFILE": "api"})
LAUNCH = Read(data={"profile": "api", "pid": 4242, "runtime": RELEASE.path, "sha": "3f9c2e1"})
T0 = 1_700_000_000.0


def unit(pid: int = 4242, active: str = "active", sub: str = "running") -> ServiceStatus:
    return ServiceStatus(
        name="agent-gateway@api.service", load_state="loaded", active_state=active,
        sub_state=sub, main_pid=pid, started_usec=int(T0 * 1e6), n_restarts=0,
        memory_bytes=1 << 20, invocation_id="ab",
    )


def aligned(**changes: object) -> tuple[str, str]:
    args: dict[str, object] = {
        "current": CURRENT, "unit": unit(), "unit_problem": "", "release": RELEASE,
        "environ": ENV, "launch": LAUNCH,
    }
    args.update(changes)
    verdict = judge_alignment(**args)  # type: ignore[arg-type]
    return verdict.state, verdict.reason


def test_parse_environ_splits_on_nul_and_keeps_equals_in_values() -> None:
    """/proc environ is NUL-separated KEY=VALUE; '=' inside a value stays; junk is dropped."""
    raw = b"PYTHONPATH=/a\0X=1=2\0noequals\0\0=empty-key\0"
    assert {"PYTHONPATH": "/a", "X": "1=2"} == parse_environ(raw)


def test_all_evidence_agreeing_is_aligned() -> None:
    """One PYTHONPATH = current, launch record of this pid on this release and sha -> yes."""
    state, reason = aligned()
    assert "yes" == state
    assert "pid 4242" in reason and "3f9c2e1-b" in reason


@pytest.mark.parametrize(
    ("changes", "state", "needle"),
    [
        ({"unit": None, "unit_problem": "bus down"}, "unknown", "bus down"),
        ({"release": None, "unit": unit(pid=0, active="inactive", sub="dead")}, "unknown",
         "no release promoted"),
        ({"unit": unit(pid=0, active="failed", sub="failed")}, "unknown", "failed/failed"),
        ({"environ": Read(error="Permission denied")}, "unknown", "Permission denied"),
        ({"environ": Read()}, "unknown", "exited"),
        ({"launch": Read(error="EACCES")}, "unknown", "EACCES"),
        ({"release": None}, "no", "no release is promoted"),
        ({"release": RELEASE.model_copy(update={"problem": "dangling"})}, "no", "dangling"),
        ({"environ": Read(data={})}, "no", "no PYTHONPATH"),
        ({"environ": Read(data={"PYTHONPATH": f"{CURRENT}:/x"})}, "no", "2 PYTHONPATH entries"),
        ({"environ": Read(data={"PYTHONPATH": f"{CURRENT}:"})}, "no", "2 PYTHONPATH entries"),
        ({"environ": Read(data={"PYTHONPATH": "/opt/agent/releases/3f9c2e1-b"})}, "no",
         "not /opt/agent/gateways/api/current"),
        ({"launch": Read()}, "no", "no launch record"),
        ({"launch": Read(data={**LAUNCH.data, "pid": 17})}, "no", "pid 17, not MainPID 4242"),
        ({"launch": Read(data={**LAUNCH.data, "runtime": "/opt/agent/releases/aaaaaaa-a"})},
         "no", "restart to load it"),
        ({"launch": Read(data={**LAUNCH.data, "sha": "bbbbbbb"})}, "no", "sha bbbbbbb"),
    ],
)
def test_each_missing_or_contradicting_piece_of_evidence(
    changes: dict[str, object], state: str, needle: str
) -> None:
    """Undecidable evidence gives unknown, contradicting evidence gives no, with the reason."""
    got_state, reason = aligned(**changes)
    assert (state, True) == (got_state, needle in reason), reason


def proof(**changes: object) -> Read:
    record: dict[str, object] = {
        "profile": "api",
        "time": "2023-11-14T22:20:00Z",
        "isolated": True,
        "checks": [{"name": "cross-read", "result": "passed", "evidence": "EACCES"},
                   {"name": "egress", "result": "passed", "evidence": "blocked"}],
        "signature": "x",
    }
    record.update(changes)
    return Read(data=record)


def isolation(read: Read, *, mode: bool = True, started: float | None = T0) -> tuple[str, str]:
    verdict = judge_isolation(
        isolated_mode=mode, profile="api", proof=read, started=started, now=T0 + 3600
    )
    return verdict.state, verdict.reason


def test_passing_proof_after_the_process_started_is_isolated_with_its_age() -> None:
    """Every check passed, proved after the process started -> isolated; age is now - time."""
    verdict = judge_isolation(
        isolated_mode=True, profile="api", proof=proof(), started=T0, now=T0 + 3600
    )
    assert ("isolated", "2 checks passed") == (verdict.state, verdict.reason)
    expected_age = T0 + 3600 - parse_iso("2023-11-14T22:20:00Z")  # type: ignore[operator]
    assert expected_age == verdict.proof_age_s


@pytest.mark.parametrize(
    ("read", "kwargs", "state", "needle"),
    [
        (proof(), {"mode": False}, "not isolated", "convenience mode"),
        (Read(), {}, "unproven", "agentgw verify api"),
        (Read(error="bad json"), {}, "unproven", "bad json"),
        (proof(profile="core"), {}, "unproven", "'core'"),
        (proof(time="yesterday"), {}, "unproven", "no valid time"),
        (proof(checks=[{"name": "egress", "result": "failed"}]), {}, "not isolated", "egress"),
        (proof(checks=[{"name": "ipdeny", "result": "not-enforced"}]), {}, "not enforced",
         "ipdeny"),
        (proof(isolated=False), {}, "not isolated", "says not isolated"),
        (proof(checks=[]), {}, "not isolated", "says not isolated"),
        (proof(checks="garbage"), {}, "not isolated", "says not isolated"),
        (proof(), {"started": T0 + 10**9}, "stale", "before the running process"),
    ],
)
def test_isolation_is_never_claimed_without_a_passing_current_proof(
    read: Read, kwargs: dict[str, object], state: str, needle: str
) -> None:
    """Convenience mode, missing, foreign, failed, unenforced or stale proofs are not isolated."""
    got_state, reason = isolation(read, **kwargs)  # type: ignore[arg-type]
    assert (state, True) == (got_state, needle in reason), reason


def test_last_promote_per_profile_skips_other_actions_and_broken_lines() -> None:
    """The last promote/rollback per profile wins; apply records and junk lines are ignored."""
    lines = [
        json.dumps({"time": "2024-01-01T00:00:00Z", "action": "promote", "profile": "api",
                    "result": "ok", "detail": {"release": "aaaaaaa-a"}}).encode(),
        b"{not json",
        json.dumps({"time": "2024-01-02T00:00:00Z", "action": "rollback", "profile": "api",
                    "result": "rolled_back",
                    "detail": {"release": "bbbbbbb-b", "reason": "never healthy"}}).encode(),
        json.dumps({"time": "2024-01-03T00:00:00Z", "action": "apply", "profile": "api",
                    "result": "ok"}).encode(),
        json.dumps({"time": "2024-01-01T00:00:00Z", "action": "promote", "profile": "core",
                    "result": "ok"}).encode(),
    ]
    found = last_promotes(lines)
    assert ["api", "core"] == sorted(found)
    api = found["api"]
    assert ("rollback", "rolled_back", "bbbbbbb-b", "never healthy") == (
        api.action, api.result, api.release, api.reason)
    assert parse_iso("2024-01-02T00:00:00Z") == api.timestamp
