"""The other running gateways, before and after one operation: a promote answers for any
sibling whose process moved under it, unless the sibling's own operation moved it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import psutil

from agentgw.apply.history import read_history
from agentgw.apply.intent import read_intent
from agentgw.apply.lock import is_locked
from agentgw.bus import UnitInfo
from agentgw.fsio import parse_iso
from agentgw.model.control import Sibling
from agentgw.paths import Layout, profile_of, unit_name


class Units(Protocol):
    """What this module needs from bus/ (the Systemd object)."""

    def list_units(self, patterns: Sequence[str], states: Sequence[str] = ()) -> list[UnitInfo]: ...
    def main_pid(self, name: str) -> int: ...


def record_siblings(sd: Units, name: str) -> list[Sibling]:
    """MainPID and process start time of every other running gateway: one ListUnits call,
    then one MainPID read per running instance."""
    out = []
    for unit in sd.list_units(["agent-gateway@*.service"], ["active", "reloading"]):
        if unit.name == unit_name(name):
            continue
        pid = sd.main_pid(unit.name)
        try:
            started = psutil.Process(pid).create_time() if pid else 0.0
        except psutil.Error:
            continue
        if pid:
            out.append(Sibling(unit=unit.name, pid=pid, started=started))
    return out


def changed_siblings(
    sd: Units, layout: Layout, before: list[Sibling], since: float
) -> tuple[list[str], list[str]]:
    """Siblings whose MainPID or start time moved: (ours to answer for, their own ops).

    A sibling restarted by its own agentgw operation meanwhile (it holds its profile lock,
    has an intent, or logged a history record since ``since``) was not disturbed by us:
    promotes of different profiles may run concurrently.
    """
    changed, own = [], []
    for sib in before:
        pid = sd.main_pid(sib.unit)
        try:
            started = psutil.Process(pid).create_time() if pid else 0.0
        except psutil.Error:
            started = 0.0
        if pid == sib.pid and started == sib.started:
            continue
        text = f"{sib.unit}: pid {sib.pid} -> {pid}"
        op = own_operation(layout, profile_of(sib.unit), since)
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
    kept = len(siblings) - len(own)
    if not siblings:
        return "unchanged: none running"
    if kept > 4:
        return f"unchanged: MainPID and start time of {kept} running siblings{mine}"
    same = [s for s in siblings if not any(o.startswith(f"{s.unit}:") for o in own)]
    return "unchanged: " + (", ".join(f"{s.unit} pid {s.pid}" for s in same) or "none") + mine
