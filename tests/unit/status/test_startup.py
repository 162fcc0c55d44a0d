"""Why a start failed, judged from systemd's facts and the health waiter's record (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentgw.model.profile import Profile
from agentgw.observe.startup import ReadyRecord, entry_lines, judge_start, want_failure
from tests.unit.status.support import facts

STARTED = 1_700_000_000.0


def profile(**fields: Any) -> Profile:
    return Profile.model_validate(
        {"name": "web", "mode": "cli", "listen": "127.77.0.5:8080", **fields}
    )


def ready(result: str, *, at: float = STARTED + 5, last: str = "connection refused") -> ReadyRecord:
    return ReadyRecord(result=result, url="http://127.77.0.5:8080/health", elapsed_s=29.0,
                       attempts=140, last_error=last, time=at)


def test_notify_without_ready_names_the_mode_and_the_fix() -> None:
    """readiness: notify and a start timeout: no READY=1 was seen; the fix is readiness: health."""
    failure = judge_start(
        profile(readiness="notify", start_timeout_s=30),
        facts(result="timeout", code="killed", status=15), None,
    )
    assert failure.readiness == "notify"
    assert failure.cause == (
        "readiness: notify: no READY=1 within start_timeout_s=30s from any process of the unit"
    )
    assert "set readiness: health" in failure.fix and "raise start_timeout_s" in failure.fix


def test_notify_timeout_quotes_the_last_status_line() -> None:
    """A runtime that sent STATUS= but never READY=1 has that status quoted."""
    failure = judge_start(
        profile(readiness="notify"),
        facts(result="timeout", code="killed", status=15, status_text="loading models"), None,
    )
    assert failure.cause.endswith("its last STATUS= was 'loading models'")


def test_health_never_answering_quotes_the_waiters_last_error() -> None:
    """The waiter gave up: the URL, how long, how many tries and the last error."""
    failure = judge_start(profile(), facts(result="exit-code", code="killed", status=15),
                          ready("timeout"))
    assert failure.cause == (
        "readiness: health: GET http://127.77.0.5:8080/health never answered 200 within 29s "
        "(140 tries); last: connection refused"
    )
    assert "serve /health on 127.77.0.5:8080" in failure.fix


def test_a_stale_waiter_record_is_not_this_starts_reason() -> None:
    """A ready.json older than this start describes an earlier one: the exit is the reason."""
    failure = judge_start(profile(), facts(code="exited", status=1),
                          ready("timeout", at=STARTED - 60))
    assert failure.cause == (
        "the gateway exited with status 1 before it was ready (readiness: health)"
    )
    assert "ModuleNotFoundError" in failure.fix


@pytest.mark.parametrize(
    ("kwargs", "cause"),
    [
        ({"code": "exited", "status": 78}, "the launcher refused to start the runtime (exit 78)"),
        ({"code": "exited", "status": 0}, "exited with status 0 (it does not stay up)"),
        ({"code": "killed", "status": 11}, "killed by SIGSEGV"),
        ({"code": "dumped", "status": 6}, "killed by SIGABRT"),
        ({"result": "start-limit-hit"}, "systemd stopped restarting it"),
        ({"result": "oom-kill", "code": "killed", "status": 9}, "OOM killer"),
        ({"result": "resources", "code": ""}, "could not set up the unit's sandbox"),
    ],
)
def test_each_way_of_failing_has_its_own_cause(kwargs: dict[str, Any], cause: str) -> None:
    """Exit codes, signals, the start limit, the OOM killer and a sandbox systemd could not
    build are told apart."""
    assert cause in judge_start(profile(), facts(**kwargs), None).cause


def test_control_characters_from_the_profile_never_reach_the_terminal() -> None:
    """The waiter record is written by the profile's user: its text is cleaned."""
    failure = judge_start(profile(), facts(), ready("timeout", last="\x1b[2Jgone\rX"))
    assert "\x1b" not in failure.cause and "\r" not in failure.cause


@pytest.mark.parametrize(
    ("active", "sub", "result", "wanted"),
    [
        ("failed", "failed", "exit-code", True),
        ("activating", "auto-restart", "exit-code", True),
        ("activating", "start", "success", False),
        ("active", "running", "success", False),
        ("inactive", "dead", "success", False),
    ],
)
def test_want_failure(active: str, sub: str, result: str, wanted: bool) -> None:
    """Only a unit down after a failed start has a start failure; a stopped one does not."""
    assert want_failure(facts(active=active, sub=sub, result=result)) is wanted


def test_entry_lines_keep_the_gateways_own_lines_since_the_start() -> None:
    """From journalctl -o json: the gateway's lines (not PID 1's) at or after the start, bytes
    decoded, control characters cleaned."""
    entries = [
        {"__REALTIME_TIMESTAMP": "100", "_PID": "7", "MESSAGE": "before the start"},
        {"__REALTIME_TIMESTAMP": "200", "_PID": "9", "MESSAGE": "Traceback"},
        {"__REALTIME_TIMESTAMP": "201", "_PID": "1", "MESSAGE": "Main process exited"},
        {"__REALTIME_TIMESTAMP": "202", "_PID": "9", "MESSAGE": list(b"\x1b[31mred\xff")},
        {"__REALTIME_TIMESTAMP": "203", "_PID": "10", "MESSAGE": "agentgw-ready: error"},
    ]
    text = "\n".join(json.dumps(e) for e in entries) + "\nnot json\n"
    assert list(entry_lines(text, 200)) == ["Traceback", "?[31mred\ufffd", "agentgw-ready: error"]
