"""Carry out the state machine of plan/promote.py: run the step ``next_step`` chooses, record the
phase reached in the intent, ask again.

The intent is rewritten after every step, so a command killed anywhere leaves the phase it had
reached, and the next command's recovery knows what to undo. ``Journal.mark`` is also the one
fault-injection point of the lab's kill tests.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentgw import log
from agentgw.apply.intent import set_phase, write_intent
from agentgw.apply.outcome import Run, failure_reason
from agentgw.apply.poll import (
    Control,
    Failed,
    Probe,
    check_aligned,
    hold_settled,
    start_failed,
    wait_ready,
)
from agentgw.bus import ServiceStatus
from agentgw.errors import AgentgwError
from agentgw.fsio import flip_symlink, fsync_dir
from agentgw.model.control import Outcome
from agentgw.model.history import Intent
from agentgw.model.profile import Profile
from agentgw.model.status import StartFailure
from agentgw.paths import Layout, unit_name
from agentgw.plan.promote import (
    Course,
    Observed,
    Op,
    Phase,
    Result,
    Step,
    StepName,
    advance,
    next_step,
)
from agentgw.plan.units import STOP_MARGIN_S
from agentgw.store.release import read_manifest

# Set to a phase name to make the command stop there (for the kill -9 recovery tests).
FAULT_PAUSE_ENV = "AGENTGW_FAULT_PAUSE"
READY_GRACE_S = 30.0


def harness_pause(phase: str) -> None:
    """The kill point of tests/integration/control: with AGENTGW_FAULT_PAUSE=<phase> (set by
    that harness only) the command says so on stderr and waits there for its SIGKILL."""
    if os.environ.get(FAULT_PAUSE_ENV) != phase:
        return
    print(f"agentgw: paused at {phase}", file=sys.stderr, flush=True)
    while True:
        time.sleep(60)


def release_target(name: str) -> str:
    """What ``current`` points at: relative, so the tree can be inspected from another root."""
    return f"../../releases/{name}"


def link_name(link: Path) -> str | None:
    """The release dir name a current/previous symlink points at (None when absent)."""
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


def warm_up(probe: Probe) -> None:
    """Import and build what the phases after the restart need (the HTTP client of the health
    check, the outcome and history records, structlog for the summary line), in a thread,
    while the restart job runs: the wait for it releases the GIL, and a promote spends ~300 ms
    there (bench_control's row "promote overhead over bare restart + readiness"). Joined
    before those phases."""
    # An error here is not reported: it resurfaces where the module or model is used.
    with contextlib.suppress(Exception):
        probe.warm_up()
        log.preload()
        from agentgw.model.history import HistoryRecord

        Outcome.model_rebuild(force=True)
        HistoryRecord.model_rebuild(force=True)


@dataclass(frozen=True)
class Move:
    """What one operation does: ``profile`` from ``previous`` to ``target``. ``prior_previous``:
    where ``previous`` pointed before (put back on the way back)."""

    op: Op
    profile: Profile
    target: str
    previous: str | None
    prior_previous: str | None = None

    @classmethod
    def of_intent(cls, intent: Intent, profile: Profile) -> Move:
        return cls(intent.op, profile, intent.target, intent.previous, intent.prior_previous)

    def course(self, phase: Phase) -> Course:
        return Course(op=self.op, phase=phase, has_previous=self.previous is not None,
                      settle=self.profile.health.settle_s > 0)


@dataclass
class Journal:
    """The intent of one operation on disk (None: it has none), rewritten at every phase."""

    intents: Path
    intent: Intent | None = None
    pause: Callable[[str], None] = harness_pause

    def begin(self, move: Move) -> None:
        """Write the intent, before anything changes."""
        self.intent = write_intent(
            self.intents, op=move.op, profile=move.profile.name, target=move.target,
            previous=move.previous, prior_previous=move.prior_previous, phase="intent",
        )
        self.mark("intent")

    def mark(self, phase: str) -> None:
        """Record ``phase``; then the single fault-injection point (a no-op outside the
        harness, see ``harness_pause``)."""
        if self.intent is not None and self.intent.phase != phase:
            self.intent = set_phase(self.intents, self.intent, phase)
        self.pause(phase)


@dataclass(frozen=True)
class Ending:
    """How the steps ended; ``reason`` and ``start``: why the target failed, if it did."""

    result: Result
    reason: str = ""
    start: StartFailure | None = None


@dataclass
class Facts:
    """What the steps learn for the steps after them."""

    status: ServiceStatus | None = None
    sha: str = ""
    failures: list[Exception] = field(default_factory=list)
    reason: str = ""
    start: StartFailure | None = None


class Executor:
    """Runs the steps of one operation as plan/promote.py chooses them."""

    def __init__(
        self, layout: Layout, sd: Control, probe: Probe, move: Move, journal: Journal, run: Run
    ) -> None:
        # Set by the caller: run once, while the first restart job runs (must not raise).
        self.meanwhile: Callable[[], None] | None = None
        self.layout = layout
        self.sd = sd
        self.probe = probe
        self.move = move
        self.journal = journal
        self.run = run
        self.facts = Facts()

    def drive(self, course: Course, observed: Observed) -> Ending:
        """Steps until the operation ends; ``abort`` raises the error of the failed step."""
        while True:
            step = next_step(course, observed)
            if observed.outcome == "failed":
                self.report(step)
            if step.name == "finish":
                return Ending(step.result or "failed", self.facts.reason, self.facts.start)
            if step.name == "abort":
                raise self.facts.failures[-1]
            observed = self.attempt(step, course)
            if observed.outcome == "ok":
                course = advance(course, step)
                self.journal.mark(course.phase)

    def attempt(self, step: Step, course: Course) -> Observed:
        release = self.move.target
        if course.back and self.move.previous is not None:
            release = self.move.previous
        try:
            self.act(step.name, release)
        except Exception as exc:  # noqa: BLE001 - an outcome: plan/promote.py says where it leads
            self.facts.failures.append(exc)
            return Observed("failed", step.name)
        return Observed("ok", step.name)

    def report(self, step: Step) -> None:
        """Say where a failure leads: back (with the start's last log lines), or nowhere."""
        exc = self.facts.failures[-1]
        name = self.move.profile.name
        if step.name == "flip-back":
            self.facts.reason = failure_reason(exc)
            self.facts.start = exc.start if isinstance(exc, Failed) else None
            self.run.out(f"  failed: {self.facts.reason}; rolling back")
            if self.facts.start is not None and self.facts.start.log:
                self.run.out(f"  last log lines of {unit_name(name)}:")
                for line in self.facts.start.log:
                    self.run.out(f"    | {line}")
        elif step.name == "finish":
            self.run.out(f"  the previous release {self.move.previous} did not come back: "
                         f"{failure_reason(exc)}")

    def act(self, name: StepName, release: str) -> None:
        match name:
            case "flip":
                self.flip()
            case "restart":
                self.restart()
            case "wait-ready":
                with self.run.phase("ready") as d:
                    self.facts.status = wait_ready(self.sd, self.probe, self.layout,
                                                   self.move.profile, self.run.started,
                                                   self.timeout)
                    d.append(f"pid {self.facts.status.main_pid}")
            case "prove":
                with self.run.phase("aligned") as d:
                    d.append(check_aligned(self.probe, self.move.profile, self.ready))
            case "health":
                self.health(release)
            case "settle":
                with self.run.phase("settle") as d:
                    d.append(hold_settled(self.sd, self.probe, self.move.profile, self.ready,
                                           self.facts.sha))
            case "flip-back":
                self.flip_back()
            case "stop":
                with self.run.phase("stop"):
                    self.sd.stop(unit_name(self.move.profile.name))
            case "commit" | "finish" | "abort":
                pass  # commit is the record of its phase, which drive() writes

    @property
    def timeout(self) -> float:
        """How long the restart may take, then readiness. The restart job includes the stop,
        and a draining (or SIGTERM-ignoring) gateway may take the unit's whole
        TimeoutStopSec before the new one even starts."""
        profile = self.move.profile
        stop_s = profile.stop_timeout_s + STOP_MARGIN_S
        return stop_s + profile.start_timeout_s + READY_GRACE_S

    @property
    def ready(self) -> ServiceStatus:
        if self.facts.status is None:
            raise Failed("not ready: no wait-ready step ran before")
        return self.facts.status

    def flip(self) -> None:
        move = self.move
        name = move.profile.name
        with self.run.phase("flip") as d:
            if move.previous is not None and move.previous != move.target:
                flip_symlink(self.layout.previous(name), release_target(move.previous))
            flip_symlink(self.layout.current(name), release_target(move.target))
            if move.previous == move.target:
                d.append(f"current already -> {move.target} (restart and prove it again)")
            else:
                d.append(f"current -> {move.target}"
                         + (f", previous -> {move.previous}" if move.previous else ""))

    def flip_back(self) -> None:
        """Put back ``current`` and ``previous`` as they were."""
        move = self.move
        current = self.layout.current(move.profile.name)
        previous = self.layout.previous(move.profile.name)
        with self.run.phase("flip-back") as d:
            if move.previous is None:
                current.unlink(missing_ok=True)
                fsync_dir(current.parent)
            else:
                flip_symlink(current, release_target(move.previous))
            if move.prior_previous is None:
                previous.unlink(missing_ok=True)
            else:
                flip_symlink(previous, release_target(move.prior_previous))
            d.append(f"current -> {move.previous or '(none)'}")

    def restart(self) -> None:
        unit = unit_name(self.move.profile.name)
        with self.run.phase("restart") as d:
            warm = threading.Thread(target=warm_up, args=(self.probe,), name="warm-up",
                                    daemon=True)
            try:
                self.sd.enable([unit])
                # The failed state and the start rate limit: a crash loop of the release we
                # leave must not block the start of the one we go to. A unit systemd has not
                # loaded has neither.
                with contextlib.suppress(AgentgwError):
                    self.sd.reset_failed(unit)
                warm.start()
                meanwhile, self.meanwhile = self.meanwhile, None
                result = self.sd.restart(unit, timeout=self.timeout, meanwhile=meanwhile)
            except AgentgwError as exc:
                raise Failed(exc.message) from exc
            finally:
                if warm.ident is not None:
                    warm.join()
            d.append(f"job {result}")
        if result != "done":
            raise start_failed(self.sd, self.probe, self.move.profile, self.run.started,
                               f"restart job {result}")

    def health(self, release: str) -> None:
        with self.run.phase("healthy") as d:
            manifest = read_manifest(self.layout.releases / release)
            self.facts.sha = manifest.sha
            health = self.probe.health(self.move.profile, manifest.sha)
            d.append(health.reason)
        if not health.ok:
            raise Failed(f"health check: {health.reason}")
