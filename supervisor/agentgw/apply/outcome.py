"""The record of one operation: its phases as they finish, its outcome, its history line."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentgw.apply.history import append_history, read_history
from agentgw.apply.poll import Failed
from agentgw.errors import AgentgwError
from agentgw.fsio import clean
from agentgw.log import get_logger
from agentgw.logroll import Retention
from agentgw.model.control import Outcome, PhaseTime, Sibling
from agentgw.model.history import Intent
from agentgw.model.status import StartFailure
from agentgw.plan.promote import Op, Result

log = get_logger(__name__)


@dataclass
class Run:
    """The phases of one operation, timed, reported as they finish."""

    out: Callable[[str], None]
    phases: list[PhaseTime] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @contextmanager
    def phase(self, name: str) -> Iterator[list[str]]:
        detail: list[str] = []
        t0 = time.perf_counter()
        yield detail
        ms = (time.perf_counter() - t0) * 1000
        text = "; ".join(detail)
        self.phases.append(PhaseTime(name=name, ms=round(ms, 1), detail=text))
        self.out(f"  {name:<10} {ms:8.1f} ms  {text}")


@dataclass(frozen=True)
class Summary:
    """How one operation ended. ``intent``: the ``pid:started`` of its intent, if it wrote one."""

    op: Op
    profile: str
    release: str
    previous: str | None
    result: Result
    reason: str = ""
    start: StartFailure | None = None
    intent: str | None = None
    recovered: str = ""


@dataclass(frozen=True)
class SiblingCheck:
    """The siblings before the operation, and which of them moved (ours, their own ops)."""

    before: list[Sibling]
    changed: list[str]
    own: list[str]


def intent_ident(intent: Intent) -> str:
    return f"{intent.pid}:{intent.started}"


def failure_reason(exc: Exception) -> str:
    """Why a step failed, for the output and the history record: agentgw's own message, or the
    type and text of anything else (a gateway's answer can break a parser), made printable."""
    if isinstance(exc, Failed | AgentgwError):
        return str(exc)
    log.warning("promote_unexpected_error", error=type(exc).__name__, exc_info=True)
    return f"unexpected {type(exc).__name__}: {clean(str(exc), 300)}"


def render_outcome(run: Run, summary: Summary, siblings: SiblingCheck) -> Outcome:
    return Outcome.model_validate(
        {
            "op": summary.op,
            "profile": summary.profile,
            "release": summary.release,
            "previous": summary.previous,
            "result": summary.result,
            "reason": summary.reason,
            "phases": run.phases,
            "siblings_before": siblings.before,
            "siblings_unchanged": not siblings.changed,
            "siblings_changed": siblings.changed,
            "siblings_own_ops": siblings.own,
            "recovered": summary.recovered,
            "alignment": next(
                (p.detail for p in reversed(run.phases) if p.name == "aligned"), ""
            ),
            "start_failure": summary.start,
        }
    )


def record_outcome(
    history: Path, run: Run, summary: Summary, unchanged: bool, retention: Retention
) -> None:
    """The operation's history line (the log rotates past ``retention``'s bound)."""
    detail: dict[str, Any] = {
        "release": summary.release,
        "previous": summary.previous,
        "reason": summary.reason,
        "phases": {p.name: p.ms for p in run.phases},
        "siblings_unchanged": unchanged,
    }
    if summary.intent is not None:
        detail["intent"] = summary.intent
    if summary.start is not None:
        detail["start_failure"] = summary.start.model_dump()
    record = append_history(history, summary.op, summary.result, summary.profile,
                            retention=retention, **detail)
    # The operation's one info line, with or without --debug (journald keeps it).
    log.summary(f"{summary.op}_finished", profile=summary.profile, release=summary.release,
                previous=summary.previous, result=summary.result, reason=summary.reason,
                actor=record.actor, seq=record.seq)


def record_recovery(history: Path, intent: Intent, result: Result, retention: Retention) -> str:
    """The history line of a recovery, and what to tell: ``ok`` finished a committed operation
    (its own line, unless it was written before the kill), anything else undid one."""
    ident = intent_ident(intent)
    if result == "ok":
        done = any(r.detail.get("intent") == ident for r in read_history(history, intent.profile))
        if not done:
            append_history(history, intent.op, "ok", intent.profile, release=intent.target,
                           previous=intent.previous, intent=ident, note="committed by recovery",
                           retention=retention)
        return f"recovered: finished the interrupted {intent.op} to {intent.target}"
    append_history(history, "recover", result, intent.profile, interrupted=intent.op,
                   target=intent.target, phase=intent.phase, restored=intent.previous,
                   intent=ident, retention=retention)
    return (
        f"recovered: undid the interrupted {intent.op} to {intent.target} "
        f"(at {intent.phase}); {intent.profile} runs {intent.previous} ({result})"
    )
