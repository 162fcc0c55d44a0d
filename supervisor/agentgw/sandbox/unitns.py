"""A job unit's own mounts -- what agentgw-job@.service hides or replaces -- as the unit started,
and whether the host has undone any since.

systemd builds the unit's mount namespace once, at its start: InaccessiblePaths=, the
TemporaryFileSystem= and PrivateTmp= tmpfs, the private /dev. Linux detaches a mount in every
namespace when its mount point is removed in another (a directory deleted on the host, then made
again: ``rm -rf /var/cache/agentgw`` and a rebuild; a file replaced by a rename: useradd writes
/etc/shadow and /etc/gshadow so, seen in the lab after ``agentgw apply`` added users), and then
the unit sees the host's new directory or file where it saw nothing. A unit that waits a while
for its job (the broker's prepared and spare units) may outlive such a change: before its job
it checks (:func:`undone`) and, if so, refuses the job as ``unavailable`` -- the broker runs it
in a new unit, whose namespace is built afresh. While it waits, it also watches its mount table
(:func:`wait_undone`: the kernel flags /proc/self/mountinfo on every change) and ends as soon as
one of its mounts is undone, so the broker drops it before any job is sent.

Standard library only: the job unit runs it (see :mod:`.jobunit`).
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterable, Mapping
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
# agentgw-job@.service's own mount points (a unit test pins this against the unit file).
GUARDED = (
    "/tmp", "/var/tmp", "/dev",  # noqa: S108 - mount points, not files: PrivateTmp=, PrivateDevices=
    "/run/agentgw-job", "/run/agentgw-job-io", "/var/cache/agentgw",  # TemporaryFileSystem=
    "/var/cache/agentgw/sandbox",  # BindReadOnlyPaths=
    # InaccessiblePaths=
    "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh", "/etc/agentgw", "/var/lib/agentgw",
    "/run/agentgw", "/opt/agent", "/root", "/home", "/var/log",
)


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (``\\040`` for a space) undone."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")


def mounts(text: str) -> list[tuple[int, str]]:
    """(mount id, mount point) of each line of a mountinfo text, in its order (the last one at a
    path is the one on top)."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[0].isdigit():
            found.append((int(fields[0]), _unescape(fields[4])))
    return found


def snapshot(text: str, guarded: Iterable[str] = GUARDED) -> dict[str, int]:
    """The top mount's id at each guarded path that is a mount point in ``text``."""
    wanted = set(guarded)
    return {point: mount_id for mount_id, point in mounts(text) if point in wanted}


def undone(before: Mapping[str, int], text: str) -> list[str]:
    """The guarded paths whose mount of ``before`` is gone from ``text`` (sorted)."""
    now = set(mounts(text))
    return sorted(point for point, mount_id in before.items() if (mount_id, point) not in now)


def read() -> str:
    """This process's mountinfo ('' if unreadable: nothing is guarded then)."""
    try:
        return MOUNTINFO.read_text()
    except OSError:
        return ""


def _reread(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def wait_undone(guard: Mapping[str, int], mountinfo: Path = MOUNTINFO) -> list[str]:
    """Block until one of ``guard``'s mounts is undone; the lost paths. Each change to this
    namespace's mount table wakes it (POLLPRI on mountinfo) to look. [] at once when nothing
    is guarded or mountinfo cannot be watched."""
    if not guard:
        return []
    try:
        fd = os.open(mountinfo, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI | select.POLLERR)
        text = _reread(fd)  # from now on, only a later change signals
        while not (lost := undone(guard, text)):
            poller.poll()
            text = _reread(fd)
        return lost
    finally:
        os.close(fd)
