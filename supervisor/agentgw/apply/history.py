"""The hash-chained history log: every promote, rollback and apply, append-only.

Each line carries the sha256 of the line before it, so editing or removing any line breaks the
chain. ``history.head`` holds the count and hash of the last line, so removing lines from the end
is detected too. The head trails the log by at most one line after a kill; the next append or
verify repairs that case (the line is present and chains correctly).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from agentgw.fsio import fsync_dir, write_atomic
from agentgw.machine import actor, identity
from agentgw.model.history import HistoryRecord

GENESIS = "0" * 64


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def head_path(log: Path) -> Path:
    return log.with_name(log.name.replace(".jsonl", ".head"))


def read_lines(log: Path) -> list[bytes]:
    try:
        data = log.read_bytes()
    except FileNotFoundError:
        return []
    return [line for line in data.split(b"\n") if line]


def read_head(log: Path) -> tuple[int, str]:
    try:
        head = json.loads(head_path(log).read_text())
        return int(head["count"]), str(head["hash"])
    except FileNotFoundError:
        return 0, GENESIS


def write_head(log: Path, count: int, last: str) -> None:
    write_atomic(
        head_path(log),
        json.dumps({"count": count, "hash": last}) + "\n",
        owner="root",
        group="root",
        mode=0o600,
    )


def verify_history(log: Path) -> list[str]:
    """Problems with the chain: edited, removed or reordered lines. Empty when intact."""
    problems: list[str] = []
    prev = GENESIS
    lines = read_lines(log)
    for n, line in enumerate(lines, start=1):
        try:
            record = HistoryRecord.model_validate_json(line)
        except ValueError:
            problems.append(f"line {n}: not a history record")
            prev = line_hash(line)
            continue
        if record.prev != prev:
            problems.append(f"line {n}: chain broken (edited, removed or reordered before it)")
        if record.seq != n:
            problems.append(f"line {n}: sequence {record.seq}, expected {n}")
        prev = line_hash(line)
    count, last = read_head(log)
    trailing_ok = count == len(lines) - 1 and (
        last == (line_hash(lines[-2]) if len(lines) > 1 else GENESIS)
    )
    if (count, last) != (len(lines), prev) and not trailing_ok:
        problems.append(
            f"head says {count} records ending {last[:12]}, log has {len(lines)} ending "
            f"{prev[:12]} (lines removed from the end?)"
        )
    return problems


def append_history(
    log: Path, action: str, result: str, profile: str | None = None, **detail: Any
) -> HistoryRecord:
    """Append one record, chained to the last line, fsynced; then move the head.

    Appends from concurrent operations (two profiles promoting) are serialised by a lock file,
    so no two records chain to the same predecessor.
    """
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = os.open(log.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _append_locked(log, action, result, profile, detail)
    finally:
        os.close(lock)


def _append_locked(
    log: Path, action: str, result: str, profile: str | None, detail: dict[str, Any]
) -> HistoryRecord:
    lines = read_lines(log)
    prev = line_hash(lines[-1]) if lines else GENESIS
    record = HistoryRecord(
        seq=len(lines) + 1,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        action=action,
        profile=profile,
        result=result,
        detail=detail,
        machine=identity(),
        actor=actor(),
        prev=prev,
    )
    line = record.model_dump_json().encode() + b"\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if lines and not log.read_bytes().endswith(b"\n"):
            # A killed append left a partial line: end it so the new record starts cleanly;
            # verify then reports that line instead of silently losing the new one.
            os.write(fd, b"\n")
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(log.parent)
    write_head(log, len(lines) + 1, line_hash(line))
    return record


def read_history(log: Path, profile: str | None = None) -> list[HistoryRecord]:
    out = []
    for line in read_lines(log):
        try:
            record = HistoryRecord.model_validate_json(line)
        except ValueError:
            continue
        if profile is None or record.profile == profile:
            out.append(record)
    return out
