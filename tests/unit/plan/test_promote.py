"""The promote state machine (plan/promote.py) as one table: every (phase, step, outcome) an
operation can reach -> the step chosen next, including a command killed at each phase -> the
step its recovery starts with. The table is checked against a walk of every reachable
situation, so a path added to the machine without a row (or a row no path reaches) fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from agentgw.plan.promote import (
    PHASES,
    Course,
    Observed,
    Op,
    Phase,
    Step,
    StepName,
    advance,
    as_phase,
    next_step,
)

Outcome = Literal["ok", "failed", "killed"]
FLIP_BACK, ABORT = Step("flip-back"), Step("abort")
OK, ROLLED_BACK = Step("finish", "ok"), Step("finish", "rolled_back")
FAILED = Step("finish", "failed")


@dataclass(frozen=True)
class Row:
    """At ``phase`` (the intent's record), ``step`` ended ``outcome`` -> ``expected`` next.
    ``prev`` (a release to go back to) and ``settle`` (health.settle_s > 0): None for either."""

    op: Op
    phase: Phase
    step: StepName | None
    outcome: Outcome
    expected: Step
    prev: bool | None = None
    settle: bool | None = None
    untouched: bool = False

    def matches(self, course: Course, observed: Observed) -> bool:
        return (
            (self.op, self.phase, self.step, self.outcome, self.untouched)
            == (course.op, course.phase, observed.step, observed.outcome, observed.untouched)
            and self.prev in (None, course.has_previous)
            and self.settle in (None, course.settle)
        )


def promote(phase: Phase, step: StepName | None, outcome: Outcome, expected: Step,
            **flags: bool) -> Row:
    return Row("promote", phase, step, outcome, expected, **flags)


def restart(phase: Phase, step: StepName | None, outcome: Outcome, expected: Step,
            **flags: bool) -> Row:
    return Row("restart", phase, step, outcome, expected, **flags)


TABLE = [
    # promote (rollback is the same machine): forward; a failed proof flips back, a failed
    # file step aborts (the intent stays for the next command's recovery).
    promote("intent", None, "ok", Step("flip")),
    promote("intent", "flip", "failed", ABORT),
    promote("flipped", "flip", "ok", Step("restart")),
    promote("flipped", "restart", "failed", FLIP_BACK),
    promote("flipped", "flip-back", "failed", ABORT),
    promote("restarted", "restart", "ok", Step("wait-ready")),
    promote("restarted", "wait-ready", "failed", FLIP_BACK),
    promote("restarted", "flip-back", "failed", ABORT),
    promote("ready", "wait-ready", "ok", Step("prove")),
    promote("ready", "prove", "failed", FLIP_BACK),
    promote("ready", "flip-back", "failed", ABORT),
    promote("health-wait", "prove", "ok", Step("health")),
    promote("health-wait", "health", "failed", FLIP_BACK),
    promote("health-wait", "flip-back", "failed", ABORT),
    promote("healthy", "health", "ok", Step("commit"), settle=False),
    promote("healthy", "health", "ok", Step("settle"), settle=True),
    promote("healthy", "commit", "failed", ABORT, settle=False),
    promote("healthy", "settle", "failed", FLIP_BACK, settle=True),
    promote("healthy", "flip-back", "failed", ABORT),
    promote("settled", "settle", "ok", Step("commit")),
    promote("settled", "commit", "failed", ABORT),
    promote("committed", "commit", "ok", OK),
    # the way back: the previous release proven again, or (first promote) the unit stopped.
    promote("flipped-back", "flip-back", "ok", Step("restart"), prev=True),
    promote("flipped-back", "flip-back", "ok", Step("stop"), prev=False),
    promote("flipped-back", "restart", "failed", FAILED, prev=True),
    promote("flipped-back", "stop", "failed", ABORT, prev=False),
    promote("stopped", "stop", "ok", ROLLED_BACK),
    promote("back-restarted", "restart", "ok", Step("wait-ready")),
    promote("back-restarted", "wait-ready", "failed", FAILED),
    promote("back-ready", "wait-ready", "ok", Step("prove")),
    promote("back-ready", "prove", "failed", FAILED),
    promote("back-health-wait", "prove", "ok", Step("health")),
    promote("back-health-wait", "health", "failed", FAILED),
    promote("back-healthy", "health", "ok", ROLLED_BACK, settle=False),
    promote("back-healthy", "health", "ok", Step("settle"), settle=True),
    promote("back-healthy", "settle", "failed", FAILED, settle=True),
    promote("back-settled", "settle", "ok", ROLLED_BACK),
    # restart: no link changes (it starts at flipped), no intent to commit, any failure raised.
    restart("flipped", None, "ok", Step("restart")),
    restart("flipped", "restart", "failed", ABORT),
    restart("restarted", "restart", "ok", Step("wait-ready")),
    restart("restarted", "wait-ready", "failed", ABORT),
    restart("ready", "wait-ready", "ok", Step("prove")),
    restart("ready", "prove", "failed", ABORT),
    restart("health-wait", "prove", "ok", Step("health")),
    restart("health-wait", "health", "failed", ABORT),
    restart("healthy", "health", "ok", OK, settle=False),
    restart("healthy", "health", "ok", Step("settle"), settle=True),
    restart("healthy", "settle", "failed", ABORT, settle=True),
    restart("settled", "settle", "ok", OK),
    # killed at each phase it records -> the step the next command's recovery starts with.
    promote("intent", None, "killed", FLIP_BACK),
    promote("flipped", None, "killed", FLIP_BACK),
    promote("restarted", None, "killed", FLIP_BACK),
    promote("ready", None, "killed", FLIP_BACK),
    promote("health-wait", None, "killed", FLIP_BACK),
    promote("healthy", None, "killed", FLIP_BACK),
    promote("settled", None, "killed", FLIP_BACK),
    promote("committed", None, "killed", OK),
    promote("flipped-back", None, "killed", FLIP_BACK),
    promote("stopped", None, "killed", FLIP_BACK),
    promote("back-restarted", None, "killed", FLIP_BACK),
    promote("back-ready", None, "killed", FLIP_BACK),
    promote("back-health-wait", None, "killed", FLIP_BACK),
    promote("back-healthy", None, "killed", FLIP_BACK),
    promote("back-settled", None, "killed", FLIP_BACK),
    # The recovery's flip-back failed (where no forward failure led to one already): raised,
    # the intent stays for the next command.
    promote("intent", "flip-back", "failed", ABORT),
    promote("settled", "flip-back", "failed", ABORT),
    promote("flipped-back", "flip-back", "failed", ABORT),
    promote("stopped", "flip-back", "failed", ABORT),
    promote("back-restarted", "flip-back", "failed", ABORT),
    promote("back-ready", "flip-back", "failed", ABORT),
    promote("back-health-wait", "flip-back", "failed", ABORT),
    promote("back-healthy", "flip-back", "failed", ABORT),
    promote("back-settled", "flip-back", "failed", ABORT),
    # ... and when the links and the running process are as before the command: nothing to
    # undo (a committed one is still finished).
    promote("intent", None, "killed", ROLLED_BACK, untouched=True),
    promote("flipped", None, "killed", ROLLED_BACK, untouched=True),
    promote("restarted", None, "killed", ROLLED_BACK, untouched=True),
    promote("ready", None, "killed", ROLLED_BACK, untouched=True),
    promote("health-wait", None, "killed", ROLLED_BACK, untouched=True),
    promote("healthy", None, "killed", ROLLED_BACK, untouched=True),
    promote("settled", None, "killed", ROLLED_BACK, untouched=True),
    promote("committed", None, "killed", OK, untouched=True),
    promote("flipped-back", None, "killed", ROLLED_BACK, untouched=True),
    promote("stopped", None, "killed", ROLLED_BACK, untouched=True),
    promote("back-restarted", None, "killed", ROLLED_BACK, untouched=True),
    promote("back-ready", None, "killed", ROLLED_BACK, untouched=True),
    promote("back-health-wait", None, "killed", ROLLED_BACK, untouched=True),
    promote("back-healthy", None, "killed", ROLLED_BACK, untouched=True),
    promote("back-settled", None, "killed", ROLLED_BACK, untouched=True),
]

Situation = tuple[Course, Observed]
BOTH = (True, False)


def starts() -> list[Situation]:
    """Where each operation begins: promote after writing its intent, restart at flipped."""
    out = [(Course("promote", "intent", prev, settle), Observed("ok"))
           for prev in BOTH for settle in BOTH]
    out += [(Course("restart", "flipped", True, settle), Observed("ok")) for settle in BOTH]
    return out


def walk_all(situations: set[Situation]) -> set[Situation]:
    """``situations`` and every one after them: each step run can succeed or fail."""
    seen: set[Situation] = set()
    todo = list(situations)
    while todo:
        course, observed = todo.pop()
        if (course, observed) in seen:
            continue
        seen.add((course, observed))
        step = next_step(course, observed)
        if step.name not in ("finish", "abort"):
            todo.append((advance(course, step), Observed("ok", step.name)))
            todo.append((course, Observed("failed", step.name)))
    return seen


def reachable() -> set[Situation]:
    """Every situation a run can be asked about, and a promote killed at each phase it records
    (its recovery walks on from there)."""
    runs = walk_all(set(starts()))
    recorded = {c for c, _ in runs if c.op == "promote"}
    return walk_all(runs | {(c, Observed("killed", untouched=u)) for c in recorded for u in BOTH})


SITUATIONS = sorted(reachable(), key=repr)


def row_of(course: Course, observed: Observed) -> Row:
    rows = [r for r in TABLE if r.matches(course, observed)]
    assert len(rows) == 1, f"{course} {observed}: rows {rows}"
    return rows[0]


@pytest.mark.parametrize(("course", "observed"), SITUATIONS, ids=repr)
def test_each_reachable_situation_has_one_row_that_names_the_next_step(
    course: Course, observed: Observed
) -> None:
    """Exactly one row of the table matches, and its step is the one next_step chooses."""
    expected = row_of(course, observed).expected
    actual = next_step(course, observed)
    assert expected == actual


def test_every_row_is_reached() -> None:
    """No row describes a situation no run can be in."""
    expected: list[Row] = []
    actual = [r for r in TABLE if not any(r.matches(c, o) for c, o in SITUATIONS)]
    assert expected == actual


def test_a_killed_promote_is_recoverable_at_every_phase() -> None:
    """Each phase is reached by a promote (so each is a kill point the recovery handles)."""
    expected = set(PHASES)
    actual = {c.phase for c, o in SITUATIONS if o.outcome == "killed"}
    assert expected == actual


def test_rollback_is_the_promote_machine() -> None:
    """rollback chooses what promote does in every situation."""
    promotes = [(c, o) for c, o in SITUATIONS if c.op == "promote"]
    expected = [next_step(c, o) for c, o in promotes]
    actual = [next_step(Course("rollback", c.phase, c.has_previous, c.settle), o)
              for c, o in promotes]
    assert expected == actual


def walk(course: Course, outcomes: dict[StepName, list[bool]]) -> list[str]:
    """Run the machine with scripted outcomes (each step's next outcome; ok when unscripted):
    the steps it chose, and how it ended."""
    observed = Observed("ok")
    taken: list[str] = []
    for _ in range(40):
        step = next_step(course, observed)
        if step.name in ("finish", "abort"):
            return [*taken, f"{step.name} {step.result or ''}".strip()]
        ok = outcomes.get(step.name, []).pop(0) if outcomes.get(step.name) else True
        taken.append(step.name if ok else f"{step.name}!")
        observed = Observed("ok" if ok else "failed", step.name)
        course = advance(course, step) if ok else course
    raise AssertionError(f"no end after 40 steps: {taken}")


PROOF = ["restart", "wait-ready", "prove", "health"]


@pytest.mark.parametrize(
    ("course", "outcomes", "expected"),
    [
        (Course("promote", "intent"), {}, ["flip", *PROOF, "commit", "finish ok"]),
        (Course("promote", "intent", settle=True), {},
         ["flip", *PROOF, "settle", "commit", "finish ok"]),
        (Course("promote", "intent"), {"health": [False]},
         ["flip", *PROOF[:3], "health!", "flip-back", *PROOF, "finish rolled_back"]),
        (Course("promote", "intent"), {"restart": [True, False]},
         ["flip", "restart", "wait-ready", "prove", "health", "commit", "finish ok"]),
        (Course("promote", "intent"), {"wait-ready": [False, False]},
         ["flip", "restart", "wait-ready!", "flip-back", "restart", "wait-ready!",
          "finish failed"]),
        (Course("promote", "intent", has_previous=False), {"restart": [False]},
         ["flip", "restart!", "flip-back", "stop", "finish rolled_back"]),
        (Course("promote", "intent", settle=True), {"settle": [False]},
         ["flip", *PROOF, "settle!", "flip-back", *PROOF, "settle", "finish rolled_back"]),
        (Course("promote", "intent"), {"flip": [False]}, ["flip!", "abort"]),
        (Course("restart", "flipped"), {"prove": [False]},
         ["restart", "wait-ready", "prove!", "abort"]),
        (Course("restart", "flipped"), {}, [*PROOF, "finish ok"]),
    ],
    ids=["promote", "settle", "unhealthy", "unused-script", "back-fails", "first", "unsettled",
         "flip-fails", "restart-fails", "restart"],
)
def test_whole_paths(course: Course, outcomes: dict[StepName, list[bool]],
                     expected: list[str]) -> None:
    """Whole runs read like the module docstring: forward, back, first promote, restart."""
    actual = walk(course, outcomes)
    assert expected == actual


@pytest.mark.parametrize("phase", PHASES)
def test_recovery_from_each_phase_ends(phase: Phase) -> None:
    """A killed promote's recovery ends rolled back (or ok if it had committed), with a
    previous release or without one."""
    for prev in BOTH:
        course = Course("promote", phase, has_previous=prev)
        observed = Observed("killed")
        taken = []
        for _ in range(20):
            step = next_step(course, observed)
            if step.name in ("finish", "abort"):
                break
            taken.append(step.name)
            course, observed = advance(course, step), Observed("ok", step.name)
        expected = Step("finish", "ok" if phase == "committed" else "rolled_back")
        assert expected == step, taken


def test_a_phase_this_version_does_not_know_is_recovered_from_the_start() -> None:
    """An intent written by another version, at a phase not in PHASES: undone like any
    uncommitted one."""
    expected = ("intent", FLIP_BACK)
    phase = as_phase("draining")
    actual = (phase, next_step(Course("promote", phase), Observed("killed")))
    assert expected == actual
