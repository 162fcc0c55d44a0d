"""Why a gateway did not start: systemd's facts, the health waiter's record and the journal.

:func:`judge_start` is pure: it turns what was read into a :class:`StartFailure` that names the
readiness mode waited for, what was (not) seen and the fix. ``agentgw promote``/``restart``
print it with the unit's last journal lines and record it in the history; ``agentgw status``
and the registry show it while the unit is not running.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agentgw.bus import StartFacts
from agentgw.errors import AgentgwError
from agentgw.fsio import clean
from agentgw.model.profile import Profile
from agentgw.model.status import StartFailure
from agentgw.paths import log_namespace, unit_name
from agentgw.run import run

READY_RECORD = "ready.json"
EX_CONFIG = 78
# Signals systemd itself sends to stop a unit: not the cause of a failed start.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGKILL)
TAIL_LINES = 12
# journalctl reads files journald may still be writing: a slow host gets this long.
JOURNAL_TIMEOUT_S = 5.0
SETTLE_S = 2.0
SETTLE_POLL_S = 0.15


@dataclass(frozen=True)
class ReadyRecord:
    """The health waiter's ``ready.json``: how its last wait ended."""

    result: str
    url: str
    elapsed_s: float
    attempts: int
    last_error: str
    time: float

    @classmethod
    def parse(cls, data: Any) -> ReadyRecord | None:
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(
                result=str(data["result"]),
                url=str(data["url"]),
                elapsed_s=float(data["elapsed_s"]),
                attempts=int(data["attempts"]),
                last_error=str(data["last_error"]),
                time=float(data["time"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def want_failure(facts: StartFacts) -> bool:
    """Whether the unit is down because a start failed (not stopped on purpose, not up)."""
    if facts.active_state in ("active", "reloading", "deactivating"):
        return False
    if facts.sub_state == "auto-restart" or facts.active_state == "failed":
        return True
    return facts.active_state == "activating" and facts.result != "success"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def judge_start(
    profile: Profile, facts: StartFacts, ready: ReadyRecord | None
) -> StartFailure:
    """Why the last start of ``profile``'s unit failed, with the fix."""
    logs = f"agentgw logs {profile.name} -n 50"
    started = facts.main_start_usec / 1e6
    fresh = ready if ready is not None and ready.time >= started - 1 else None
    cause, fix = (
        _systemd_gave_up(profile, facts, logs)
        or _health_never_answered(profile, fresh, logs)
        or _process_ended(profile, facts, logs)
        or _never_ready(profile, facts, fresh, logs)
        or (
            f"unit {facts.active_state}/{facts.sub_state} (result: {facts.result})",
            f"its last log lines say why ({logs})",
        )
    )
    return StartFailure(readiness=profile.readiness, cause=clean(cause), fix=fix)


def _systemd_gave_up(profile: Profile, facts: StartFacts, logs: str) -> tuple[str, str] | None:
    if facts.result == "start-limit-hit":
        return (
            f"systemd stopped restarting it: too many failed starts in a row "
            f"({facts.n_restarts} restarts)",
            f"find the cause in its log ({logs}), fix it, then: agentgw restart {profile.name}",
        )
    if facts.result == "resources":
        return (
            "systemd could not set up the unit's sandbox or run the launcher (result: resources)",
            f"run agentgw apply (it recreates home, logs and the env file); {logs}",
        )
    if facts.result == "oom-kill":
        return (
            "the kernel's OOM killer ended it at resources.memory_max="
            f"{profile.resources.memory_max}",
            "raise resources.memory_max in the profile, or make the runtime use less",
        )
    return None


def _health_never_answered(
    profile: Profile, fresh: ReadyRecord | None, logs: str
) -> tuple[str, str] | None:
    if profile.readiness != "health" or fresh is None or fresh.result != "timeout":
        return None
    return (
        f"readiness: health: GET {fresh.url} never answered 200 within "
        f"{fresh.elapsed_s:g}s ({fresh.attempts} tries); last: {fresh.last_error}",
        f"make the runtime serve {profile.health.path} on {profile.listen} (its own "
        f"arguments or env choose where it listens), or raise start_timeout_s "
        f"(now {profile.start_timeout_s:g}s) if it starts slowly; {logs}",
    )


def _process_ended(profile: Profile, facts: StartFacts, logs: str) -> tuple[str, str] | None:
    if facts.main_code == "exited" and facts.main_status == EX_CONFIG:
        return (
            "the launcher refused to start the runtime (exit 78): its agentgw-launch error line "
            "names the variable",
            f"agentgw launch --dry-run {profile.name}; agentgw apply",
        )
    if facts.main_code == "exited":
        how = (
            f"exited with status {facts.main_status}"
            if facts.main_status
            else "exited with status 0 (it does not stay up)"
        )
        return (
            f"the gateway {how} before it was ready (readiness: {profile.readiness})",
            f"its last log lines say why ({logs}); a missing dependency shows as "
            "ModuleNotFoundError: build the release with it (agentgw release build)",
        )
    if facts.main_code in ("killed", "dumped") and facts.main_status not in STOP_SIGNALS:
        return (
            f"the gateway was killed by {_signal_name(facts.main_status)} before it was ready",
            f"its last log lines say why ({logs})",
        )
    return None


def _never_ready(
    profile: Profile, facts: StartFacts, fresh: ReadyRecord | None, logs: str
) -> tuple[str, str] | None:
    limit = profile.start_timeout_s
    if facts.result == "timeout" and profile.readiness == "notify":
        said = f"; its last STATUS= was {facts.status_text!r}" if facts.status_text else ""
        return (
            f"readiness: notify: no READY=1 within start_timeout_s={limit:g}s from any process "
            f"of the unit{said}",
            "if the runtime does not call sd_notify(READY=1), set readiness: health (the unit "
            "is started once its health check answers 200); if it notifies late, raise "
            "start_timeout_s",
        )
    if facts.result == "timeout":
        last = f"; last: {fresh.last_error}" if fresh is not None else ""
        return (
            f"readiness: health: not healthy within start_timeout_s={limit:g}s{last}",
            f"raise start_timeout_s if it starts slowly; {logs}",
        )
    if profile.readiness == "health" and fresh is not None and fresh.result == "exited":
        return (
            f"the gateway exited before GET {fresh.url} answered 200",
            f"its last log lines say why ({logs})",
        )
    return None


def journal_tail(
    profile: str, *, since_usec: int, lines: int = TAIL_LINES, settle_s: float = SETTLE_S
) -> tuple[str, ...]:
    """The gateway's last journal lines (its own output and the health waiter's, not systemd's
    lines about the unit, which the cause already says) since ``since_usec``.

    journald reads a process's output asynchronously, so the lines of a process that just
    died may still be arriving: read until two reads agree (at most ``settle_s``). Empty when
    the journal cannot be read: that must not hide the failure itself.
    """
    argv = [
        "journalctl", f"--namespace=+{log_namespace(profile)}", "-u", unit_name(profile),
        "-n", str(lines * 4), "-o", "json", "--no-pager",
    ]
    deadline = time.monotonic() + settle_s
    seen: tuple[str, ...] | None = None
    while True:
        try:
            done = run(argv, check=False, timeout=JOURNAL_TIMEOUT_S)
        except AgentgwError:
            return ()
        now = tuple(entry_lines(done.stdout, since_usec))[-lines:]
        if now == seen or time.monotonic() >= deadline:
            return now
        seen = now
        time.sleep(SETTLE_POLL_S)


def entry_lines(text: str, since_usec: int) -> Iterator[str]:
    """MESSAGE of each journal entry (``journalctl -o json``) from the gateway's processes,
    not PID 1, at or after ``since_usec``."""
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            at = int(entry.get("__REALTIME_TIMESTAMP", 0))
        except (ValueError, TypeError, AttributeError):
            continue
        if at < since_usec or entry.get("_PID") == "1":
            continue
        message = entry.get("MESSAGE")
        if isinstance(message, list):  # not valid UTF-8: journalctl gives the bytes
            message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(
                "utf-8", "replace"
            )
        if isinstance(message, str) and message.strip():
            yield clean(message)
