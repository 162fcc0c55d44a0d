"""The locks: one mutating operation per profile (others may run concurrently), and the
releases lock (add and gc exclusive, promote shared).

A lock is ``flock`` on ``<state>/locks/<profile>.lock``; the kernel drops it when its owner dies,
so a dead owner's lock is broken safely by construction. The holder writes its pid and process
start time into the file so a refused caller can name it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from agentgw.errors import AgentgwError, Exit
from agentgw.paths import Layout


def holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "an unknown process"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(info.get("started", 0))))
    return f"pid {info.get('pid', '?')} (started {started}, {info.get('op', '?')})"


def is_locked(locks: Path, profile: str) -> bool:
    """Whether some process holds ``profile``'s lock right now (a shared probe, never kept)."""
    try:
        fd = os.open(locks / f"{profile}.lock", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextmanager
def profile_lock(locks: Path, profile: str, op: str) -> Iterator[None]:
    """Hold the profile's lock for the block; exit 4 naming the holder if it is taken."""
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = locks / f"{profile}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentgwError(
                f"profile {profile} is locked by {holder(path)}",
                hint="wait for that operation to finish; a lock is released when its owner exits",
                code=Exit.LOCKED,
            ) from None
        me = psutil.Process()
        record = {"pid": me.pid, "started": me.create_time(), "op": op, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        os.close(fd)


@contextmanager
def releases_lock(layout: Layout, *, shared: bool = False) -> Iterator[None]:
    """Hold the releases lock: exclusive for add and gc; shared for readers that must not see a
    release vanish (promote between verifying a release and pointing ``current`` at it).

    flock on the releases directory itself: the kernel drops it when the holder dies.
    """
    fd = os.open(layout.releases, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentgwError(
                "the releases are locked by another agentgw operation",
                hint="wait for it to finish; the lock is released when its owner exits",
                code=Exit.LOCKED,
            ) from None
        yield
    finally:
        os.close(fd)
