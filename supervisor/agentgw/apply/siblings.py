"""The other running gateways, before and after one operation: a promote answers for any
sibling whose process moved under it, unless the sibling's own operation moved it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import psutil

from agentgw.apply.history import read_history
from agentgw.apply.intent import read_intent
from agentgw.apply.lock import is_locked
from agentgw.bus import UnitInfo
from agentgw.errors import AgentgwError
from agentgw.fsio import parse_iso
from agentgw.model.control import Sibling
from agentgw.paths import Layout, profile_of, unit_name


class Units(Protocol):
    """What this module needs from bus/ (the Systemd object)."""

    def list_units(self, patterns: Sequence[str], states: Sequence[str] = ()) -> list[UnitInfo]: ...
    def main_pid(self, name: str) -> int: ...


def start_time(pid: int) -> float:
    """When process ``pid`` started (psutil's clock: boot time + start ticks); 0.0 if none."""
    try:
        return psutil.Process(pid).create_time() if pid else 0.0
    except psutil.Error:
        return 0.0


def since_boot_clock() -> float:
    """Now, on the clock of psutil's process start times (its boot time + CLOCK_BOOTTIME)."""
    return psutil.boot_time() + time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class SiblingWatch:
    """The siblings of one operation, read in two steps so that the reading of ~100 MainPIDs
    (~25 ms) overlaps the restart job instead of coming before it (bench_control's row
    "promote overhead over bare restart + readiness").

    ``listed`` (before anything changes): which siblings run, one ListUnits call, and when
    (``began``). ``read`` (while systemd restarts our unit, or later): each one's MainPID and
    start time. Read after the operation began, a process still counts as the sibling's state
    *before* it only if it started before ``began``: a sibling that stopped, or whose process is
    newer, is ``moved`` -- it changed during the operation, and :func:`changed_siblings` answers
    for it like for any other. ``began`` is on psutil's clock for process start times (boot time
    + time since boot, whose start ticks are 10 ms: a process started less than 10 ms after the
    listing may read as older; our restart comes after the intent and the flip are written).
    Not the command's own start: one command may restart several profiles (verify --lifecycle).
    """

    sd: Units
    units: list[str]
    began: float
    before: list[Sibling] | None = None
    moved: list[Sibling] = field(default_factory=list)

    @classmethod
    def listed(cls, sd: Units, name: str) -> SiblingWatch:
        running = sd.list_units(["agent-gateway@*.service"], ["active", "reloading"])
        units = [unit.name for unit in running if unit.name != unit_name(name)]
        return cls(sd, units, since_boot_clock())

    def read(self) -> list[Sibling]:
        """MainPID and start time of each listed sibling, once; later calls return the same."""
        if self.before is None:
            before: list[Sibling] = []
            moved: list[Sibling] = []
            for unit in self.units:
                pid = self.sd.main_pid(unit)
                sibling = Sibling(unit=unit, pid=pid, started=start_time(pid))
                ok = sibling.pid and 0 < sibling.started < self.began
                (before if ok else moved).append(sibling)
            self.before, self.moved = before, moved
        return self.before

    def read_meanwhile(self) -> None:
        """:meth:`read` while the restart job runs; an error leaves it to :meth:`read` after."""
        with contextlib.suppress(AgentgwError):
            self.read()


def changed_siblings(
    sd: Units, layout: Layout, watch: SiblingWatch, since: float
) -> tuple[list[str], list[str]]:
    """Siblings whose MainPID or start time moved: (ours to answer for, their own ops).

    A sibling restarted by its own agentgw operation meanwhile (it holds its profile lock,
    has an intent, or logged a history record since ``since``) was not disturbed by us:
    promotes of different profiles may run concurrently.
    """
    before = watch.read()  # first: it fills ``watch.moved``
    moves = [f"{sib.unit}: " + (f"pid {sib.pid} started during this operation" if sib.pid
                                 else "stopped") for sib in watch.moved]
    for sib in before:
        pid = sd.main_pid(sib.unit)
        if pid != sib.pid or start_time(pid) != sib.started:
            moves.append(f"{sib.unit}: pid {sib.pid} -> {pid}")
    changed, own = [], []
    for text in moves:
        op = own_operation(layout, profile_of(text.split(":")[0]), since)
        if op:
            own.append(f"{text} ({op})")
        else:
            changed.append(text)
    return changed, own


def own_operation(layout: Layout, name: str, since: float) -> str:
    """Which agentgw operation of profile ``name`` ran since ``since``; "" if none did."""
    if is_locked(layout.locks, name):
        return "its own agentgw operation holds its lock"
    intent = read_intent(layout.intents, name)
    if intent is not None:
        return f"its own {intent.op}, interrupted at {intent.phase}"
    for record in reversed(read_history(layout.history, name)):
        at = parse_iso(record.time)
        if at is None or at < since - 1:  # history times have whole seconds
            break
        return f"its own {record.action} ({record.result})"
    return ""


def describe_siblings(
    siblings: list[Sibling], changed: list[str], own: Sequence[str] = ()
) -> str:
    """The siblings phase's line: what moved under us, else what stayed (and what moved by
    its own operation, which is not counted against this one)."""
    if changed:
        return "CHANGED: " + ", ".join(changed)
    mine = "; restarted by their own operation: " + ", ".join(own) if own else ""
    if not siblings and not own:
        return "unchanged: none running"
    same = [s for s in siblings if not any(o.startswith(f"{s.unit}:") for o in own)]
    if len(same) > 4:
        return f"unchanged: MainPID and start time of {len(same)} running siblings{mine}"
    return "unchanged: " + (", ".join(f"{s.unit} pid {s.pid}" for s in same) or "none") + mine
