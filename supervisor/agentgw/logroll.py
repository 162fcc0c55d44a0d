"""Size-bounded rotation of agentgw's append-only JSONL logs (history.jsonl, execs.jsonl).

A log ``L`` is read as its retained files oldest first, ``L.N`` .. ``L.1``, then ``L`` itself.
Rotation copies ``L`` to ``L.1`` (after shifting ``L.k`` to ``L.k+1``, dropping what passes the
retention) and then truncates ``L`` in place -- never renames it: the sandbox broker holds
execs.jsonl open (systemd opened it for the broker, which may not open it itself), and its
descriptor must keep pointing at the live file. Writers and rotation exclude each other with
``flock`` on the live file; readers take it shared, so they never see a half-shifted set.

Every state a kill can leave is one the next rotation finishes and readers read right:

* between two shifts: a gap in the numbers (``L.1``, ``L.3``), read in order all the same;
* after ``L.1`` is written, before ``L`` is truncated: ``L`` starts with all of ``L.1``; readers
  skip that copy and the next :func:`rotate` (or append) redoes the copy and the truncation;
* after a dropped file is counted, before it is unlinked: ``L.dropped`` already names its last
  line, so it is not counted twice.

``L.dropped`` keeps what retention removed: how many lines, the hash of the last one (so a hash
chain still starts from a known anchor, and removing the oldest retained file is detected) and a
tally of the removed lines by a caller's key, so counters read from the logs never go down.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from agentgw.fsio import fsync_dir, write_atomic

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_KEEP = 8

# A line -> the key it is tallied under when its file is dropped (None: not tallied).
Tally = Callable[[bytes], "str | None"]
T = TypeVar("T")
CACHED_PARSES = 64  # (parse, file) results kept by parse_files: keep + 1 files of a few logs
_parsed: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_parsed_lock = threading.Lock()  # the registry reads from its worker threads


@dataclass(frozen=True)
class Retention:
    """Rotate the live file once it is over ``max_bytes``; keep ``keep`` rotated files."""

    max_bytes: int = DEFAULT_MAX_BYTES
    keep: int = DEFAULT_KEEP


@dataclass(frozen=True)
class Dropped:
    """What retention removed so far (all zero/None when nothing was)."""

    lines: int = 0
    last_hash: str | None = None
    tally: dict[str, int] = field(default_factory=dict)


class Line(NamedTuple):
    file: str  # the file's name, e.g. history.jsonl.2
    n: int  # line number in that file, from 1
    data: bytes


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def rotated(live: Path, n: int) -> Path:
    return live.with_name(f"{live.name}.{n}")


def dropped_path(live: Path) -> Path:
    return live.with_name(f"{live.name}.dropped")


def rotated_numbers(live: Path) -> list[int]:
    """The numbers of the rotated files present, oldest (highest) first."""
    pattern = re.compile(re.escape(live.name) + r"\.([1-9][0-9]{0,5})")
    try:
        names = os.listdir(live.parent)
    except FileNotFoundError:
        return []
    found = (pattern.fullmatch(name) for name in names)
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _read_fd(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def _locked(live: Path, how: int) -> Iterator[int | None]:
    """``flock`` on the live file (its descriptor; None when there is no live file)."""
    flags = (os.O_RDWR if how == fcntl.LOCK_EX else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(live, flags)
    except FileNotFoundError:
        yield None
        return
    try:
        fcntl.flock(fd, how)
        yield fd
    finally:
        os.close(fd)


def read_files(live: Path) -> tuple[Dropped, list[tuple[Path, bytes]]]:
    """What retention dropped, the retained files oldest first, then the live one: one
    consistent snapshot. The copy an interrupted rotation left at the start of the live file is
    skipped."""
    with _locked(live, fcntl.LOCK_SH):
        dropped = read_dropped(live)
        files = [(rotated(live, n), _read(rotated(live, n))) for n in rotated_numbers(live)]
        data = _read(live)
    newest = files[-1][1] if files else b""
    if newest and data.startswith(newest):
        data = data[len(newest):]
    return dropped, [*files, (live, data)]


def last_line(live: Path) -> tuple[Dropped, bytes | None]:
    """What retention dropped, and the log's last non-empty line (the live file's, else the
    newest rotated file's that has one; None: no line at all). Reads only the files' tails, so
    an append to a log with many retained files stays cheap."""
    with _locked(live, fcntl.LOCK_SH):
        dropped = read_dropped(live)
        for path in [live, *(rotated(live, n) for n in reversed(rotated_numbers(live)))]:
            line = _last_line_of(path)
            if line is not None:
                return dropped, line
    return dropped, None


def _last_line_of(path: Path, step: int = 1 << 16) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        while True:
            start = max(0, size - step)
            lines = [line for line in os.pread(fd, size - start, start).split(b"\n") if line]
            # From the middle of a file the first piece may be the end of a longer line.
            if start == 0 or len(lines) >= 2:
                return lines[-1] if lines else None
            step *= 4
    finally:
        os.close(fd)


def read_log(live: Path) -> tuple[Dropped, list[Line]]:
    """What retention dropped, and every non-empty line of the retained files and the live
    one, oldest first."""
    dropped, files = read_files(live)
    out = []
    for path, data in files:
        out += [Line(path.name, n, line) for n, line in enumerate(data.split(b"\n"), 1) if line]
    return dropped, out


def _copy_at_start(live: Path, newest: Path) -> int:
    """The size of ``newest`` when the live file starts with a copy of it (a rotation a kill
    interrupted), else 0. Compared on the first and last 4 KiB of the copy: records carry
    times and sequence numbers, so equal ends at equal offsets mean the copy."""
    try:
        size = newest.stat().st_size
        if not size or live.stat().st_size < size:
            return 0
        with open(newest, "rb") as a, open(live, "rb") as b:
            k = min(size, 4096)
            ends = [(os.pread(f.fileno(), k, 0), os.pread(f.fileno(), k, size - k)) for f in (a, b)]
    except FileNotFoundError:
        return 0
    return size if ends[0] == ends[1] else 0


def parse_files(live: Path, parse: Callable[[bytes], T]) -> tuple[Dropped, list[T]]:
    """What retention dropped, and ``parse`` of each retained file's content oldest first, then
    of the live one's (without the copy an interrupted rotation left at its start). The files
    are read under the shared lock, and parsed after it is released (the broker's appends wait
    for the lock). Results are cached by (device, inode, size, mtime): a rotated file never
    changes, so after a rotation or an append only the live file is read again."""
    keys: list[tuple[Any, ...]] = []
    fresh: dict[tuple[Any, ...], bytes] = {}
    known: dict[tuple[Any, ...], Any] = {}
    with _locked(live, fcntl.LOCK_SH):
        dropped = read_dropped(live)
        numbers = rotated_numbers(live)
        skip = _copy_at_start(live, rotated(live, 1)) if 1 in numbers else 0
        for path in [*(rotated(live, n) for n in numbers), live]:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            start = skip if path == live else 0
            key = (parse, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, start)
            keys.append(key)
            with _parsed_lock:
                if key in _parsed:
                    known[key] = _parsed[key]
            if key not in known:
                fresh[key] = path.read_bytes()[start:]
    known.update((key, parse(data)) for key, data in fresh.items())
    out = [known[key] for key in keys]
    with _parsed_lock:
        for key, value in zip(keys, out, strict=True):
            _parsed[key] = value
            _parsed.move_to_end(key)
        while len(_parsed) > CACHED_PARSES:
            _parsed.popitem(last=False)
    return dropped, out


def read_dropped(live: Path) -> Dropped:
    try:
        raw = json.loads(dropped_path(live).read_bytes())
    except FileNotFoundError:
        return Dropped()
    tally = {str(k): int(v) for k, v in dict(raw.get("tally", {})).items()}
    last = raw.get("last_hash")
    return Dropped(int(raw["lines"]), str(last) if last else None, tally)


def append(live: Path, line: bytes) -> None:
    """Append ``line`` (one record, newline-terminated) durably, excluding a rotation. A partial
    last line a kill left is ended first, so the new record starts cleanly (a verify then
    reports that line instead of silently losing the new one)."""
    fd = os.open(live, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def append_fd(fd: int, line: bytes) -> None:
    """Append ``line`` on a descriptor opened with O_APPEND (possibly write-only: the broker's),
    excluding a rotation; one write, so concurrent writers never interleave lines."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        os.write(fd, line)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def rotate(live: Path, retention: Retention, tally: Tally | None = None) -> bool:
    """Rotate ``live`` when it is over the bound, or finish a rotation a kill interrupted.
    True when the live file was moved to ``L.1``."""
    with _locked(live, fcntl.LOCK_EX) as fd:
        if fd is None:
            return False
        data = _read_fd(fd)
        newest = _read(rotated(live, 1))
        if not (newest and data.startswith(newest)):
            if len(data) <= retention.max_bytes:
                return False
            _shift(live, retention.keep, tally)
        write_atomic(rotated(live, 1), data, mode=0o600)
        os.ftruncate(fd, 0)
        os.fsync(fd)
        return True


def _shift(live: Path, keep: int, tally: Tally | None) -> None:
    """Make room for a new ``L.1``: the files present become ``L.2`` (newest) .. ``L.m+1``
    (oldest), which also closes a gap a killed shift left; those past ``keep`` are dropped,
    oldest first. Moves up go oldest first and moves down newest first, so no rename lands on
    a file not moved yet, and the numbers keep the files' order at every step."""
    numbers = rotated_numbers(live)
    moves = list(zip(numbers, range(len(numbers) + 1, 1, -1), strict=True))
    for n, target in moves:
        if target > keep:
            _drop(live, rotated(live, n), tally)
    kept = [(n, target) for n, target in moves if target <= keep]
    for n, target in [m for m in kept if m[1] > m[0]]:
        os.rename(rotated(live, n), rotated(live, target))
    for n, target in [m for m in reversed(kept) if m[1] < m[0]]:
        os.rename(rotated(live, n), rotated(live, target))
    fsync_dir(live.parent)


def _drop(live: Path, path: Path, tally: Tally | None) -> None:
    lines = [line for line in _read(path).split(b"\n") if line]
    before = read_dropped(live)
    if lines and before.last_hash != line_hash(lines[-1]):
        counts = Counter(before.tally)
        for line in lines:
            key = tally(line) if tally is not None else None
            if key is not None:
                counts[key] += 1
        record = {"lines": before.lines + len(lines), "last_hash": line_hash(lines[-1]),
                  "tally": dict(sorted(counts.items()))}
        write_atomic(dropped_path(live), json.dumps(record) + "\n", mode=0o600)
    path.unlink()
