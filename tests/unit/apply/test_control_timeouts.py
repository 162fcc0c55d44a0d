"""How long promote waits for the restart job: the stop is part of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentgw.apply.outcome import Run
from agentgw.apply.poll import Failed
from agentgw.apply.promote import READY_GRACE_S, Executor, Journal, Move
from agentgw.config.load import load_config
from agentgw.errors import AgentgwError
from agentgw.observe.gateway import GatewayProbe
from agentgw.paths import Layout

REPO = Path(__file__).resolve().parents[3]


class RecordingSystemd:
    """Records the restart's timeout, then fails it (nothing after the restart is needed)."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def enable(self, names: list[str]) -> None:
        pass

    def reset_failed(self, name: str) -> None:
        pass

    def restart(self, name: str, *, timeout: float = 90.0, meanwhile: object = None) -> str:
        self.timeouts.append(timeout)
        raise AgentgwError("recorded")

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"not expected here: {name}")


def test_restart_wait_covers_the_units_stop_timeout(tmp_path: Path) -> None:
    """api drains for up to 60 s (TimeoutStopSec=65): the wait for its restart job is the stop
    timeout plus the health timeout plus the ready grace, so a slow drain, or a release that
    ignores SIGTERM, no longer turns a promote away from it into a rollback to it."""
    config = load_config(REPO)
    profile = config.profiles["api"]
    sd = RecordingSystemd()
    layout = Layout(tmp_path)
    move = Move("restart", profile, "unused", "unused")
    executor = Executor(layout, sd, GatewayProbe(layout), move, Journal(layout.intents),
                        Run(lambda line: None))
    with pytest.raises(Failed, match="recorded"):
        executor.act("restart", "unused")
    assert sd.timeouts == [60 + 5 + profile.start_timeout_s + READY_GRACE_S]
