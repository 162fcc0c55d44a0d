"""promote, rollback, restart and recovery as one state machine (pure).

The state is the phase an operation has reached (what its intent records: the last step done)
plus two facts of the profile: is there a release to go back to, and does it settle. The
executor (apply/promote.py) runs the step ``next_step`` chooses, records the phase it reached,
and asks again with what it saw::

    intent -flip-> flipped -restart-> restarted -wait-ready-> ready -prove-> health-wait
      -health-> healthy [-settle-> settled] -commit-> committed -> finish ok

A proving step (restart .. settle) that fails flips back: ``flipped-back``, then either ``stop``
(a first promote: there was no release before) or the same proofs for the previous release
(``back-*`` phases), ending ``rolled_back``, or ``failed`` if the way back fails too. A failed
file step (flip, commit, flip-back, stop) aborts: the error is raised and the intent stays for the
next command's recovery. ``restart`` starts at ``flipped`` (current already points at its
release), has no commit (no intent) and aborts on any failure.

A command that finds the intent of a killed one asks with outcome ``killed``: a committed one is
finished, one that changed nothing is dropped, any other flips back and proves the previous
release (as above).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

Op = Literal["promote", "rollback", "restart"]
Result = Literal["ok", "rolled_back", "failed"]
StepName = Literal[
    "flip", "restart", "wait-ready", "prove", "health", "settle", "commit",
    "flip-back", "stop", "finish", "abort",
]
# "health-wait" is the phase after ``prove`` (aligned, waiting for health): the name intents and
# the kill-point tests have used since the first release.
ForwardPhase = Literal[
    "intent", "flipped", "restarted", "ready", "health-wait", "healthy", "settled", "committed"
]
BackPhase = Literal[
    "flipped-back", "back-restarted", "back-ready", "back-health-wait", "back-healthy",
    "back-settled", "stopped",
]
Phase = ForwardPhase | BackPhase
PHASES: tuple[Phase, ...] = (*get_args(ForwardPhase), *get_args(BackPhase))
BACK_PHASES: frozenset[str] = frozenset(get_args(BackPhase))

# The steps that prove a release, each with the phase it reaches.
PROOFS: dict[StepName, ForwardPhase] = {
    "restart": "restarted",
    "wait-ready": "ready",
    "prove": "health-wait",
    "health": "healthy",
    "settle": "settled",
}
# The proof that follows each phase (from ``flipped``, or ``flipped-back`` on the way back).
AFTER: dict[str, StepName] = {
    "flipped": "restart", "restarted": "wait-ready", "ready": "prove",
    "health-wait": "health", "healthy": "settle",
}
FILE_STEPS: frozenset[StepName] = frozenset({"flip", "commit", "flip-back", "stop"})


@dataclass(frozen=True)
class Course:
    """Where one operation is. ``has_previous``: a release to go back to (False on a first
    promote, whose way back is to stop the unit); ``settle``: the profile's health.settle_s > 0."""

    op: Op
    phase: Phase
    has_previous: bool = True
    settle: bool = False

    @property
    def back(self) -> bool:
        """On the way back to the previous release."""
        return self.phase in BACK_PHASES


@dataclass(frozen=True)
class Observed:
    """What the last step (``step``; None before the first) did: ``ok``, ``failed``, or
    ``killed`` (its command died, and a later command found its intent). ``untouched`` (killed
    only): the links are as before the command and the unit runs aligned on them, so there is
    nothing to undo."""

    outcome: Literal["ok", "failed", "killed"]
    step: StepName | None = None
    untouched: bool = False


@dataclass(frozen=True)
class Step:
    """One step to run; ``result`` says how the operation ends (``finish`` only)."""

    name: StepName
    result: Result | None = None


def as_phase(text: str) -> Phase:
    """A recorded phase; one this version does not know (another version wrote it) is
    recovered like any other uncommitted one, from the start."""
    for phase in PHASES:
        if phase == text:
            return phase
    return "intent"


def next_step(course: Course, observed: Observed) -> Step:
    """The step after ``observed`` at ``course`` (see the module docstring)."""
    if observed.outcome == "killed":
        if course.phase == "committed":
            return Step("finish", "ok")
        if observed.untouched:
            return Step("finish", "rolled_back")
        return Step("flip-back")
    if observed.outcome == "ok":
        return planned_step(course)
    failed = observed.step if observed.step is not None else planned_step(course).name
    if failed in FILE_STEPS or (course.op == "restart" and not course.back):
        return Step("abort")
    return Step("finish", "failed") if course.back else Step("flip-back")


def planned_step(course: Course) -> Step:
    """The step after ``course`` when everything went well."""
    phase = course.phase
    if phase == "intent":
        return Step("flip")
    if phase == "committed":
        return Step("finish", "ok")
    if phase == "stopped":
        return Step("finish", "rolled_back")
    if phase == "flipped-back":
        return Step("restart") if course.has_previous else Step("stop")
    proof = AFTER.get(phase.removeprefix("back-"))
    if proof == "settle" and not course.settle:
        proof = None
    if proof is not None:
        return Step(proof)
    if course.back:
        return Step("finish", "rolled_back")
    return Step("finish", "ok") if course.op == "restart" else Step("commit")


def phase_after(course: Course, step: Step) -> Phase:
    """The phase ``step`` reaches when it succeeds (recorded in the intent)."""
    match step.name:
        case "flip":
            return "flipped"
        case "commit":
            return "committed"
        case "flip-back":
            return "flipped-back"
        case "stop":
            return "stopped"
        case "finish" | "abort":
            return course.phase
    reached = PROOFS[step.name]
    return as_phase(f"back-{reached}") if course.back else reached


def advance(course: Course, step: Step) -> Course:
    return replace(course, phase=phase_after(course, step))
