"""The gateway's pidfile in AGENT_HOME and ``--replace``: take over only our own stale instance.

A pid alone names a process only while it lives; pids are reused. The pidfile therefore records
the process start time (from /proc/<pid>/stat) and the AGENT_HOME and profile it served: a
recorded instance is "running" only when that pid is alive with that start time, and it is
ours to stop only when its home and profile are ours. Anything else is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

PIDFILE = "gateway.pid"
POLL_S = 0.05


class Refused(Exception):
    """Another live process holds the pidfile and may not (or could not) be replaced."""


@dataclass(frozen=True)
class Owner:
    """What the pidfile records about the instance that wrote it."""

    pid: int
    start_time: int
    home: str
    profile: str


class State(Enum):
    GONE = "gone"  # not running (or the pid now belongs to another process): overwrite
    OURS = "ours"  # a live instance of this profile in this home
    FOREIGN = "foreign"  # a live process recorded for another profile or home: never touch


def start_time(pid: int) -> int | None:
    """The start time of a live (not zombie) process in clock ticks since boot, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after its closing one.
    fields = stat.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def me(home: Path, profile: str) -> Owner:
    pid = os.getpid()
    started = start_time(pid)
    if started is None:
        raise RuntimeError("cannot read this process's own /proc/<pid>/stat")
    return Owner(pid, started, str(home), profile)


def read(home: Path) -> Owner | None:
    """The recorded owner; None when there is no pidfile or it cannot be understood."""
    try:
        data = json.loads((home / PIDFILE).read_text())
        return Owner(int(data["pid"]), int(data["start_time"]), data["home"], data["profile"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def classify(owner: Owner, home: Path, profile: str) -> State:
    if start_time(owner.pid) != owner.start_time:
        return State.GONE
    if owner.home == str(home) and owner.profile == profile:
        return State.OURS
    return State.FOREIGN


def write(home: Path, owner: Owner) -> None:
    """Replace the pidfile atomically, so a concurrent reader sees the old or the new owner."""
    tmp = home / f".{PIDFILE}.{owner.pid}.tmp"
    tmp.write_text(json.dumps(asdict(owner)) + "\n")
    os.replace(tmp, home / PIDFILE)


def remove_if_mine(home: Path, owner: Owner) -> None:
    if read(home) == owner:
        (home / PIDFILE).unlink(missing_ok=True)


def claim(home: Path, profile: str, *, replace: bool, timeout_s: float) -> None:
    """Make sure no other live instance of this profile serves from ``home``.

    With ``replace``, our own stale instance gets SIGTERM and ``timeout_s`` to drain and exit.
    Raises Refused otherwise: a live instance without ``replace``, anything foreign, or an
    instance that outlives its drain time.
    """
    owner = read(home)
    if owner is None:
        return
    state = classify(owner, home, profile)
    if state is State.GONE:
        return
    if state is State.FOREIGN:
        raise Refused(
            f"{home / PIDFILE} names pid {owner.pid}, alive, serving profile {owner.profile!r} "
            f"from {owner.home}: not this profile's instance, left alone"
        )
    if not replace:
        raise Refused(f"profile {profile} already runs as pid {owner.pid}; --replace takes over")
    try:
        os.kill(owner.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        raise Refused(f"cannot signal pid {owner.pid} of profile {profile}") from None
    deadline = time.monotonic() + timeout_s
    while start_time(owner.pid) == owner.start_time:
        if time.monotonic() >= deadline:
            raise Refused(f"pid {owner.pid} of profile {profile} did not exit in {timeout_s:g}s")
        time.sleep(POLL_S)
