"""The executor of the promote state machine on a tmp_path host (the proofs replaced, the links
real): the intent on disk names each phase when its kill point is passed, and a command killed
at any phase is recovered by the next one to the release it ran before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentgw.apply.control import Controller
from agentgw.apply.history import read_history
from agentgw.apply.intent import read_intent
from agentgw.apply.outcome import Run
from agentgw.apply.promote import FAULT_PAUSE_ENV, Executor, Journal, Move
from agentgw.config.load import load_config
from agentgw.observe.gateway import GatewayProbe
from agentgw.paths import Layout
from agentgw.plan.promote import Observed

REPO = Path(__file__).resolve().parents[3]
OLD, NEW = "1111111-old", "2222222-new"
FORWARD = ["flipped", "restarted", "ready", "health-wait", "healthy", "committed"]


class Killed(BaseException):
    """SIGKILL, as far as the command is concerned: nothing after it runs."""


class QuietSystemd:
    """No siblings; nothing else is asked (the proving steps are replaced)."""

    def list_units(self, patterns: Any, states: Any = ()) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"not expected here: {name}")


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    layout = Layout(tmp_path)
    (layout.etc / "gateways").mkdir(parents=True)
    (layout.etc / "gateways" / "api.yaml").write_text((REPO / "gateways/api.yaml").read_text())
    for name in (OLD, NEW):
        (layout.releases / name).mkdir(parents=True)
    layout.profile_dir("api").mkdir(parents=True)
    layout.env_file("api").write_text("AGENT_PROFILE=api\n")
    (layout.profile_dir("api") / "current").symlink_to(f"../../releases/{OLD}")
    act = Executor.act

    def links_only(self: Executor, name: str, release: str) -> None:
        if name in ("flip", "flip-back"):
            act(self, name, release)  # type: ignore[arg-type]

    monkeypatch.setattr(Executor, "act", links_only)
    return layout


def current(layout: Layout) -> str:
    return (layout.profile_dir("api") / "current").resolve().name


def test_the_intent_names_each_phase_at_its_kill_point(layout: Layout) -> None:
    """Each phase of a promote is on disk when the command passes its kill point."""
    seen: list[tuple[str, str | None]] = []

    def pause(phase: str) -> None:
        intent = read_intent(layout.intents, "api")
        seen.append((phase, intent.phase if intent is not None else None))

    profile = load_config(layout.etc).profile("api")
    move = Move("promote", profile, NEW, OLD)
    journal = Journal(layout.intents, pause=pause)
    journal.begin(move)
    executor = Executor(layout, QuietSystemd(), GatewayProbe(layout), move, journal,
                        Run(lambda line: None))
    ending = executor.drive(move.course("intent"), Observed("ok"))
    expected = [(p, p) for p in ["intent", *FORWARD]]
    assert (expected, "ok", NEW) == (seen, ending.result, current(layout))


@pytest.mark.parametrize("phase", ["intent", *FORWARD])
def test_a_promote_killed_at_each_phase_is_recovered(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    """Killed at ``phase``: the next command's recovery returns api to the old release (or,
    killed once committed, finishes the promote), records it and drops the intent."""

    def killed(seconds: float) -> None:
        raise Killed

    # The harness's own switch: the command stops at ``phase`` (sleeping, here killed).
    monkeypatch.setenv(FAULT_PAUSE_ENV, phase)
    monkeypatch.setattr("agentgw.apply.promote.time.sleep", killed)
    monkeypatch.setattr(Controller, "untouched", lambda self, profile, intent: False)
    config = load_config(layout.etc)
    ctl = Controller(layout, config, QuietSystemd(), GatewayProbe(layout), lambda line: None)
    with pytest.raises(Killed):
        ctl.switch("promote", ctl.profile("api"), NEW)
    left = read_intent(layout.intents, "api")
    assert left is not None and left.phase == phase
    monkeypatch.delenv(FAULT_PAUSE_ENV)
    out: list[str] = []
    message = Controller(layout, config, QuietSystemd(), GatewayProbe(layout), out.append).recover(
        config.profile("api"))
    records = [(r.action, r.result) for r in read_history(layout.history, "api")]
    if phase == "committed":
        expected = (NEW, [("promote", "ok")], "recovered: finished the interrupted promote")
    else:
        expected = (OLD, [("recover", "rolled_back")], "recovered: undid the interrupted promote")
    assert expected == (current(layout), records, message[:len(expected[2])])
    assert read_intent(layout.intents, "api") is None
