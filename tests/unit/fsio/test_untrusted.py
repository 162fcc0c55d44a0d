"""Reading files a profile's user may have planted: nothing blocks, follows a link, reads
without end or raises past the reader; what is echoed is printable."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from agentgw.fsio import Unreadable, clean, loads_untrusted, read_json, read_untrusted


def test_a_small_regular_file_is_read(tmp_path: Path) -> None:
    """The ordinary case."""
    path = tmp_path / "launch.json"
    path.write_text('{"pid": 7}')
    assert read_json(path).data == {"pid": 7}


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO with no writer would block an open for reading forever: refused within 1 s."""
    fifo = tmp_path / "launch.json"
    os.mkfifo(fifo)
    done: list[str] = []

    def read() -> None:
        done.append(read_json(fifo).error or "")

    reader = threading.Thread(target=read, daemon=True)
    t0 = time.monotonic()
    reader.start()
    reader.join(1.0)
    assert done, "read_json blocked on a fifo"
    assert "is a fifo, not a regular file" in done[0]
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/shadow", "/proc/self/environ"])
def test_a_symlink_is_never_followed(tmp_path: Path, target: str) -> None:
    """A link to /dev/zero (endless) or to a file root may read: not followed."""
    link = tmp_path / "launch.json"
    link.symlink_to(target)
    with pytest.raises(Unreadable, match="is a symlink"):
        read_untrusted(link)


def test_a_large_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    """More than the cap: refused, naming the cap."""
    big = tmp_path / "launch.json"
    with open(big, "wb") as f:
        f.truncate(1 << 30)
    assert "more than the 65536 allowed" in (read_json(big).error or "")


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path, depth: int) -> None:
    """Brackets nested past the parser's recursion limit give a reason, not RecursionError."""
    path = tmp_path / "launch.json"
    path.write_text("[" * depth)
    assert "not valid JSON" in (read_json(path, cap=1 << 20).error or "")
    with pytest.raises(ValueError):
        loads_untrusted("[" * depth + "]" * depth)


def test_devices_and_directories_are_refused(tmp_path: Path) -> None:
    """Only regular files are read."""
    (tmp_path / "d").mkdir()
    with pytest.raises(Unreadable, match="a directory"):
        read_untrusted(tmp_path / "d")
    with pytest.raises(Unreadable, match="a character device"):
        read_untrusted("/dev/null")


def test_absent_is_absent(tmp_path: Path) -> None:
    """A missing file is not an error: Read() with no data."""
    read = read_json(tmp_path / "nothing.json")
    assert (read.data, read.error) == (None, None)


def test_clean_replaces_control_characters() -> None:
    """Escapes, CR, LF and DEL never reach a terminal; long text is cut."""
    assert clean("a\x1b[2Jb\rc\nd\x7f") == "a?[2Jb?c?d?"
    assert clean("x" * 500, 10) == "x" * 10 + "..."
    assert json.loads(json.dumps(clean("\x00"))) == "?"
