"""Which sibling restarts a promote answers for: not those made by the sibling's own operation."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agentgw.apply.history import append_history
from agentgw.apply.intent import write_intent
from agentgw.apply.lock import profile_lock
from agentgw.apply.siblings import changed_siblings, describe_siblings
from agentgw.model.control import Sibling
from agentgw.paths import Layout


class MovedPids:
    """Every sibling's MainPID is now this process: each one looks restarted."""

    def main_pid(self, name: str) -> int:
        return os.getpid()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


def sibling(profile: str) -> Sibling:
    return Sibling(unit=f"agent-gateway@{profile}.service", pid=1, started=0.0)


def test_a_sibling_moved_by_nobody_is_ours_to_answer_for(layout: Layout) -> None:
    changed, own = changed_siblings(MovedPids(), layout, [sibling("core")], since=time.time())
    assert changed == [f"agent-gateway@core.service: pid 1 -> {os.getpid()}"] and own == []


def test_a_sibling_moved_by_its_own_operation_is_not(layout: Layout) -> None:
    since = time.time()
    # core: its own promote finished meanwhile (a history record after ``since``)
    append_history(layout.history, "promote", "ok", "core", release="x")
    # mcp: its own restart holds its lock right now
    # api: its own rollback was killed and left an intent
    write_intent(layout.intents, op="rollback", profile="api", target="t", previous=None,
                 prior_previous=None, phase="flipped")
    with profile_lock(layout.locks, "mcp", "restart"):
        changed, own = changed_siblings(
            MovedPids(), layout, [sibling(p) for p in ("core", "mcp", "api")], since=since
        )
    assert changed == []
    assert [o.split(": ")[0] for o in own] == [f"agent-gateway@{p}.service"
                                              for p in ("core", "mcp", "api")]
    assert "its own promote (ok)" in own[0]
    assert "holds its lock" in own[1]
    assert "rollback, interrupted at flipped" in own[2]
    # An old record does not excuse a restart now.
    changed, own = changed_siblings(MovedPids(), layout, [sibling("core")],
                                    since=time.time() + 5)
    assert len(changed) == 1 and own == []


def test_describe_siblings() -> None:
    sibs = [sibling(p) for p in ("core", "mcp")]
    assert describe_siblings(sibs, ["x"]) == "CHANGED: x"
    assert describe_siblings(sibs, []) == (
        "unchanged: agent-gateway@core.service pid 1, agent-gateway@mcp.service pid 1")
    text = describe_siblings(sibs, [], ["agent-gateway@mcp.service: pid 1 -> 2 (its own)"])
    assert text.startswith("unchanged: agent-gateway@core.service pid 1; restarted by their own")
