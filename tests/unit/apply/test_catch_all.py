"""After the flip, any exception (not only agentgw's own) rolls back and is recorded: a
gateway's answer that breaks a parser must never leave the new release current and running
with an intent behind and no history record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentgw.apply.control import Controller
from agentgw.apply.history import read_history
from agentgw.apply.intent import read_intent
from agentgw.apply.promote import Executor
from agentgw.config.load import load_config
from agentgw.observe.gateway import GatewayProbe
from agentgw.paths import Layout

REPO = Path(__file__).resolve().parents[3]


class QuietSystemd:
    """No siblings; nothing else is asked (the steps that would ask are replaced below)."""

    def list_units(self, patterns: Any, states: Any = ()) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"not expected here: {name}")


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth exceeded"),
                                   KeyError("pid"), UnicodeDecodeError("utf-8", b"\xff", 0, 1,
                                                                      "invalid start byte")])
def test_an_unexpected_error_after_the_flip_rolls_back_and_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """The first start (the new release) raises; the way back succeeds: the result is
    rolled_back, current points at the previous release again, the history says why and no
    intent is left."""
    layout = Layout(tmp_path)
    (layout.etc / "gateways").mkdir(parents=True)
    (layout.etc / "gateways" / "api.yaml").write_text((REPO / "gateways/api.yaml").read_text())
    for name in ("1111111-old", "2222222-new"):
        (layout.releases / name).mkdir(parents=True)
    layout.profile_dir("api").mkdir(parents=True)
    layout.env_file("api").write_text("AGENT_PROFILE=api\n")
    (layout.profile_dir("api") / "current").symlink_to("../../releases/1111111-old")
    calls: list[str] = []
    act = Executor.act

    def proofs_only_fail_on_new(self: Executor, name: str, release: str) -> None:
        if name in ("flip", "flip-back"):
            return act(self, name, release)  # type: ignore[arg-type]
        if name == "restart":
            calls.append(release)
        if release == "2222222-new":
            raise error
        return None

    monkeypatch.setattr(Executor, "act", proofs_only_fail_on_new)
    out: list[str] = []
    ctl = Controller(layout, load_config(layout.etc), QuietSystemd(), GatewayProbe(layout),
                     out.append)
    outcome = ctl.switch("promote", ctl.profile("api"), "2222222-new")
    assert calls == ["2222222-new", "1111111-old"]
    assert outcome.result == "rolled_back"
    assert f"unexpected {type(error).__name__}" in outcome.reason
    assert (layout.profile_dir("api") / "current").resolve().name == "1111111-old"
    (record,) = [r for r in read_history(layout.history, "api") if r.action == "promote"]
    assert record.result == "rolled_back" and "unexpected" in record.detail["reason"]
    assert read_intent(layout.intents, "api") is None
