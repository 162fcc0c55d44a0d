"""Counts for /metrics' counters: promotes and rollbacks by result (from the history log) and
sandbox execs by result (from execs.jsonl). Pure parses, and reads cached by file identity: both
files are append-only, so an unchanged (inode, size, mtime) means unchanged counts.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from agentgw.observe.promotes import PROMOTE_ACTIONS

# (profile, op, result), e.g. ("api", "promote", "rolled_back")
PromoteKey = tuple[str, str, str]
# (profile, result): ok, nonzero, timed_out, error
ExecKey = tuple[str, str]


@dataclass(frozen=True)
class Counts:
    promotes: dict[PromoteKey, int] = field(default_factory=dict)
    execs: dict[ExecKey, int] = field(default_factory=dict)

    def only(self, profiles: frozenset[str] | None) -> Counts:
        """The counts of these profiles (None: all)."""
        if profiles is None:
            return self
        return Counts({k: v for k, v in self.promotes.items() if k[0] in profiles},
                      {k: v for k, v in self.execs.items() if k[0] in profiles})


def _records(lines: list[bytes]) -> list[dict[str, object]]:
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("profile"), str):
            out.append(record)
    return out


def count_promotes(lines: list[bytes]) -> dict[PromoteKey, int]:
    """Promote and rollback records of history JSONL by (profile, op, result)."""
    found: Counter[PromoteKey] = Counter()
    for record in _records(lines):
        action = record.get("action")
        if action in PROMOTE_ACTIONS:
            found[(str(record["profile"]), str(action), str(record.get("result", "")))] += 1
    return dict(found)


def exec_result(record: dict[str, object]) -> str:
    if record.get("error") or record.get("exit_code") is None:
        return "error"
    if record.get("timed_out"):
        return "timed_out"
    return "ok" if record.get("exit_code") == 0 else "nonzero"


def count_execs(lines: list[bytes]) -> dict[ExecKey, int]:
    """execs.jsonl records by (profile, result)."""
    found: Counter[ExecKey] = Counter()
    for record in _records(lines):
        found[(str(record["profile"]), exec_result(record))] += 1
    return dict(found)


@functools.lru_cache(maxsize=8)
def _counted(path: str, kind: str, _identity: tuple[int, int, int]) -> dict[tuple[str, ...], int]:
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    if kind == "promotes":
        return {tuple(k): v for k, v in count_promotes(lines).items()}
    return {tuple(k): v for k, v in count_execs(lines).items()}


def _read(path: Path, kind: str) -> dict[tuple[str, ...], int]:
    try:
        st = path.stat()
        return _counted(os.fspath(path), kind, (st.st_ino, st.st_size, st.st_mtime_ns))
    except OSError:
        return {}


def read_counts(history: Path, execs: Path) -> Counts:
    """Both counts as the files are now (missing or unreadable files count nothing)."""
    promotes = {(k[0], k[1], k[2]): v for k, v in _read(history, "promotes").items()}
    execs_ = {(k[0], k[1]): v for k, v in _read(execs, "execs").items()}
    return Counts(promotes, execs_)
