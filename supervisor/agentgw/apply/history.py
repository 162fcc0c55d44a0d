"""The hash-chained history log: every promote, rollback and apply, append-only.

Each line carries the sha256 of the line before it, so editing or removing any line breaks the
chain. ``history.head`` holds the count and hash of the last line, so removing lines from the end
is detected too. The head trails the log by at most one line after a kill; the next append or
verify repairs that case (the line is present and chains correctly).

The log rotates by size (:mod:`agentgw.logroll`): the chain runs on across ``history.jsonl.N``
.. ``history.jsonl.1`` and ``history.jsonl`` as one sequence -- the first record of a new file
chains to the last record of the file before it, and ``seq`` keeps counting. Files dropped by
the retention leave their line count and last hash in ``history.jsonl.dropped``: the oldest
retained record must chain to that, so removing a retained file is detected too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentgw import logroll
from agentgw.fsio import fsync_dir, write_atomic
from agentgw.logroll import Line, line_hash
from agentgw.machine import actor, identity
from agentgw.model.history import HistoryRecord, history_tally

GENESIS = "0" * 64


def head_path(log: Path) -> Path:
    return log.with_name(log.name.replace(".jsonl", ".head"))


def read_lines(log: Path) -> list[bytes]:
    """Every record line of the retained files and the live one, oldest first."""
    return [line.data for line in logroll.read_log(log)[1]]


def read_chain(log: Path) -> tuple[int, str, list[Line]]:
    """The records retention dropped, the hash of the last of them (0, GENESIS: none), and the
    retained lines oldest first."""
    dropped, lines = logroll.read_log(log)
    return dropped.lines, dropped.last_hash or GENESIS, lines


def rotate_history(log: Path, retention: logroll.Retention) -> bool:
    """Rotate the log when it is over the bound (or finish an interrupted rotation), under the
    appenders' lock so no append reads the files half-shifted."""
    with _appenders_lock(log):
        return logroll.rotate(log, retention, history_tally)


@contextlib.contextmanager
def _appenders_lock(log: Path) -> Iterator[None]:
    """The lock every append and rotation of ``log`` holds (a file beside it)."""
    lock = os.open(log.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)


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
    """Problems with the chain: edited, removed or reordered lines, in any retained file.
    Empty when intact."""
    base, anchor, lines = read_chain(log)
    problems = _check_chain(lines, base, anchor)
    count, last = read_head(log)
    total = base + len(lines)
    end = line_hash(lines[-1].data) if lines else anchor
    before_end = line_hash(lines[-2].data) if len(lines) > 1 else anchor
    trailing_ok = count == total - 1 and last == before_end
    if (count, last) != (total, end) and not trailing_ok:
        problems.append(
            f"head says {count} records ending {last[:12]}, log has {total} ending "
            f"{end[:12]} (lines removed from the end?)"
        )
    return problems


def _check_chain(lines: list[Line], base: int, prev: str) -> list[str]:
    problems: list[str] = []
    for seq, line in enumerate(lines, start=base + 1):
        where = f"{line.file} line {line.n}"
        try:
            record = HistoryRecord.model_validate_json(line.data)
        except ValueError:
            problems.append(f"{where}: not a history record")
            prev = line_hash(line.data)
            continue
        if record.prev != prev:
            crossing = seq > 1 and line.n == 1
            problems.append(
                f"{where}: chain broken across files (it does not follow the last record "
                "before this file: a file edited, removed or reordered)" if crossing else
                f"{where}: chain broken (edited, removed or reordered before it)"
            )
        if record.seq != seq:
            problems.append(f"{where}: sequence {record.seq}, expected {seq}")
        prev = line_hash(line.data)
    return problems


def append_history(
    log: Path,
    action: str,
    result: str,
    profile: str | None = None,
    *,
    retention: logroll.Retention | None = None,
    **detail: Any,
) -> HistoryRecord:
    """Append one record, chained to the last line, fsynced; then move the head; then rotate
    the log when it is over ``retention``'s bound (agentgw.yaml's ``rotation``; None: the
    caller leaves that to ``agentgw rotate``).

    Appends from concurrent operations (two profiles promoting) are serialised by a lock file,
    so no two records chain to the same predecessor.
    """
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _appenders_lock(log):
        record = _append_locked(log, action, result, profile, detail)
        if retention is not None and log.stat().st_size > retention.max_bytes:
            logroll.rotate(log, retention, history_tally)
        return record


def _next_link(log: Path) -> tuple[int, str]:
    """The sequence number and ``prev`` hash of the next record: from the log's last line alone
    when it is a record, else (a line a kill cut short, say) by counting every retained one."""
    dropped, last = logroll.last_line(log)
    if last is None:
        return dropped.lines + 1, dropped.last_hash or GENESIS
    try:
        seq = json.loads(last).get("seq")
    except (ValueError, AttributeError):
        seq = None
    if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
        return seq + 1, line_hash(last)
    base, anchor, lines = read_chain(log)
    return base + len(lines) + 1, line_hash(lines[-1].data) if lines else anchor


def _append_locked(
    log: Path, action: str, result: str, profile: str | None, detail: dict[str, Any]
) -> HistoryRecord:
    seq, prev = _next_link(log)
    record = HistoryRecord(
        seq=seq,
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
    logroll.append(log, line)
    fsync_dir(log.parent)
    write_head(log, record.seq, line_hash(line))
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
