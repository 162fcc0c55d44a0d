"""Reading what a profile's user can write, as root, without trusting it.

A gateway runs as ``agent-<p>`` and owns its logs directory, so ``launch.json`` and
``ready.json`` there are whatever that user made them: a FIFO (an open for reading blocks
forever), a symlink to /dev/zero (a read never ends), a 10 GB file, JSON nested 100,000 deep
(the parser's RecursionError), text with terminal escapes. Every such read goes through
:func:`read_untrusted`: the last component is never followed (O_NOFOLLOW; the directories above
are root's), the open never blocks (O_NONBLOCK), only a regular file is read, at most ``cap``
bytes, and every failure is a :class:`Unreadable` with a reason. :func:`clean` makes anything
echoed from such a file safe for a terminal.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

RECORD_CAP = 64 * 1024
FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
CONTROL = dict.fromkeys([*range(32), 127], "?")
KINDS = (
    (stat.S_ISFIFO, "a fifo"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class Unreadable(Exception):
    """Why a file a profile can write was not read (the reason, ready to show)."""


def _kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def read_untrusted(path: Path | str, cap: int = RECORD_CAP) -> bytes:
    """At most ``cap`` bytes of the regular file at ``path``; FileNotFoundError when it is
    absent, Unreadable for anything else that is not a small regular file."""
    try:
        fd = os.open(path, FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: O_NOFOLLOW met a symlink
            raise Unreadable("is a symlink (not followed)") from None
        raise Unreadable(exc.strerror or type(exc).__name__) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(f"is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > cap:
            raise Unreadable(f"is {info.st_size} bytes, more than the {cap} allowed")
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, cap + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > cap:
            raise Unreadable(f"grew past the {cap} bytes allowed")
        return b"".join(chunks)
    except OSError as exc:
        raise Unreadable(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)


def loads_untrusted(data: bytes | str) -> Any:
    """json.loads that fails with ValueError, never RecursionError or MemoryError."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except MemoryError:
        raise ValueError("JSON too large to parse") from None


def clean(text: str, limit: int = 300) -> str:
    """``text`` with control characters (terminal escapes, CR, LF) replaced, cut to ``limit``."""
    text = text.translate(CONTROL)
    return text if len(text) <= limit else text[:limit] + "..."
