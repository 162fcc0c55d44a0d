"""Which sibling restarts a promote answers for: not those made by the sibling's own operation."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

from agentgw.apply.history import append_history
from agentgw.apply.intent import write_intent
from agentgw.apply.lock import profile_lock
from agentgw.apply.siblings import SiblingWatch, changed_siblings, describe_siblings
from agentgw.bus import UnitInfo
from agentgw.errors import AgentgwError
from agentgw.model.control import Sibling
from agentgw.paths import Layout, profile_of


class MovedPids:
    """Every sibling's MainPID is now this process: each one looks restarted."""

    def main_pid(self, name: str) -> int:
        return os.getpid()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path)


def sibling(profile: str) -> Sibling:
    return Sibling(unit=f"agent-gateway@{profile}.service", pid=1, started=0.0)


def watch(*profiles: str) -> SiblingWatch:
    """A watch that read ``profiles`` before (pid 1), nothing moved before its read."""
    before = [sibling(p) for p in profiles]
    return SiblingWatch(MovedPids(), [s.unit for s in before], time.time(), before=before)


def test_a_sibling_moved_by_nobody_is_ours_to_answer_for(layout: Layout) -> None:
    changed, own = changed_siblings(MovedPids(), layout, watch("core"), since=time.time())
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
            MovedPids(), layout, watch("core", "mcp", "api"), since=since
        )
    assert changed == []
    assert [o.split(": ")[0] for o in own] == [f"agent-gateway@{p}.service"
                                              for p in ("core", "mcp", "api")]
    assert "its own promote (ok)" in own[0]
    assert "holds its lock" in own[1]
    assert "rollback, interrupted at flipped" in own[2]
    # An old record does not excuse a restart now.
    changed, own = changed_siblings(MovedPids(), layout, watch("core"), since=time.time() + 5)
    assert len(changed) == 1 and own == []


def test_describe_siblings() -> None:
    sibs = [sibling(p) for p in ("core", "mcp")]
    assert describe_siblings(sibs, ["x"]) == "CHANGED: x"
    assert describe_siblings(sibs, []) == (
        "unchanged: agent-gateway@core.service pid 1, agent-gateway@mcp.service pid 1")
    text = describe_siblings(sibs, [], ["agent-gateway@mcp.service: pid 1 -> 2 (its own)"])
    assert text.startswith("unchanged: agent-gateway@core.service pid 1; restarted by their own")


class Running:
    """Three running siblings: ``old`` (this test's process, or one it started before the
    listing), ``new`` (one started after the listing), ``gone`` (no MainPID)."""

    def __init__(self, new_pid: int) -> None:
        self.pids = {"old": os.getpid(), "new": new_pid, "gone": 0}

    def list_units(self, patterns: Sequence[str], states: Sequence[str] = ()) -> list[UnitInfo]:
        return [UnitInfo(name=f"agent-gateway@{p}.service", description="", load_state="loaded",
                         active_state="active", sub_state="running", path="")
                for p in (*self.pids, "api")]

    def main_pid(self, name: str) -> int:
        return self.pids[profile_of(name)]


def test_a_sibling_read_during_the_restart_counts_only_if_older_than_the_listing(
    layout: Layout,
) -> None:
    """The MainPIDs are read while our restart runs. A process that started after the siblings
    were listed (``began``: here, a child started after the listing, though this process is
    older) or a sibling that stopped may have been moved by the operation: both are answered
    for; the one older than the listing is the state before. Our own unit (api) is not one."""
    sd = Running(0)
    # Started after this process but before the listing, as a sibling an earlier operation of
    # the same command restarted (verify --lifecycle restarts one profile after another).
    earlier = subprocess.Popen(["sleep", "30"])
    sd.pids["old"] = earlier.pid
    time.sleep(0.05)
    w = SiblingWatch.listed(sd, "api")
    assert w.units == [f"agent-gateway@{p}.service" for p in ("old", "new", "gone")]
    assert psutil.Process().create_time() < w.began <= time.time() + 1
    time.sleep(0.05)  # start ticks are 10 ms: the child is strictly newer than the listing
    with subprocess.Popen(["sleep", "30"]) as newer:
        try:
            sd.pids["new"] = newer.pid
            before = w.read()
            assert [s.unit for s in before] == ["agent-gateway@old.service"]
            assert [s.pid for s in w.moved] == [newer.pid, 0]
            changed, own = changed_siblings(sd, layout, w, since=time.time())
        finally:
            newer.kill()
            earlier.kill()
            earlier.wait()
    assert changed == [f"agent-gateway@new.service: pid {newer.pid} started during this operation",
                       "agent-gateway@gone.service: stopped"]
    assert own == []
    assert describe_siblings(before, changed, own).startswith("CHANGED: agent-gateway@new")


def test_a_failed_read_meanwhile_is_done_again_after() -> None:
    class Broken(Running):
        calls = 0

        def main_pid(self, name: str) -> int:
            self.calls += 1
            if self.calls == 1:
                raise AgentgwError("bus gone")
            return os.getpid()

    sd = Broken(os.getpid())
    w = SiblingWatch.listed(sd, "api")
    w.read_meanwhile()
    assert w.before is None
    assert len(w.read()) == 3 and w.moved == []
