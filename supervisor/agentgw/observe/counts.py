"""Counts for /metrics' counters: promotes and rollbacks by result (from the history log) and
sandbox execs by result (from execs.jsonl). Pure parses, and reads cached by file identity: both
logs are append-only, so an unchanged (inode, size, mtime) of every file means unchanged counts.

Both logs rotate (:mod:`agentgw.logroll`), and a Prometheus counter must never go down (a drop
reads as a reset, and ``rate()`` would count the whole remaining value again). So the counts
span every retained file, plus the tally of the files retention dropped, which rotation keeps
in ``<log>.dropped`` by the keys of :func:`history_tally` and :func:`exec_tally`: the counters
count since the log began, whatever the retention.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from agentgw import logroll
from agentgw.model.history import PROMOTE_ACTIONS

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


def _one(line: bytes) -> dict[str, object] | None:
    found = _records([line])
    return found[0] if found else None


def exec_tally(line: bytes) -> str | None:
    """The key a dropped exec record is tallied under: profile, result (tab-separated)."""
    record = _one(line)
    return None if record is None else f"{record['profile']}\t{exec_result(record)}"


def _promote_keys(data: bytes) -> dict[tuple[str, ...], int]:
    return {tuple(k): v for k, v in count_promotes(data.splitlines()).items()}


def _exec_keys(data: bytes) -> dict[tuple[str, ...], int]:
    return {tuple(k): v for k, v in count_execs(data.splitlines()).items()}


def _read(path: Path, kind: str) -> dict[tuple[str, ...], int]:
    """Counts over every retained file (each parsed once, see logroll.parse_files) plus the
    tally of the dropped ones."""
    try:
        dropped, parts = logroll.parse_files(
            path, _promote_keys if kind == "promotes" else _exec_keys)
    except (OSError, ValueError):
        return {}
    found = Counter({tuple(k.split("\t")): v for k, v in dropped.tally.items()})
    for part in parts:
        found.update(part)
    return dict(found)


def read_counts(history: Path, execs: Path) -> Counts:
    """Both counts as the logs are now, rotated files and dropped tallies included (missing or
    unreadable files count nothing)."""
    promotes = {(k[0], k[1], k[2]): v for k, v in _read(history, "promotes").items()
                if len(k) == 3}
    execs_ = {(k[0], k[1]): v for k, v in _read(execs, "execs").items() if len(k) == 2}
    return Counts(promotes, execs_)
