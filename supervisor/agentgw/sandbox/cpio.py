"""The newc ("070701") cpio format the Linux kernel unpacks as an initramfs: writer and reader.

Pure and in memory. The writer is deterministic by construction (inode numbers count up from
one, mtimes are fixed by the caller, entries keep the order they were added), so the same
entries give the same bytes: that is what makes the base image reproducible.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_FIELDS = 13  # after the magic: ino mode uid gid nlink mtime filesize devmaj devmin rdevmaj rdevmin
# namesize check
_HEADER = len(MAGIC) + _FIELDS * 8


class CpioError(ValueError):
    """A malformed archive or entry (a bug in the caller, or a corrupt cache)."""


@dataclass(frozen=True)
class Entry:
    """One archive member as the kernel sees it."""

    name: str
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _check_name(name: str) -> None:
    # The kernel resolves names relative to its root; a leading "/" or ".." would still land in
    # rootfs, but rejecting them keeps every archive we write trivially auditable.
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in name:
        raise CpioError(f"bad cpio member name: {name!r}")


def _header(ino: int, entry: Entry, size: int, namesize: int) -> bytes:
    nlink = 2 if entry.is_dir else 1
    fields = (ino, entry.mode, entry.uid, entry.gid, nlink, entry.mtime, size, 0, 0,
              entry.rdev[0], entry.rdev[1], namesize, 0)
    return MAGIC + b"".join(b"%08X" % f for f in fields)


class Writer:
    """Collects entries and renders one newc archive (ending with the trailer)."""

    def __init__(self, *, mtime: int = 0) -> None:
        self._mtime = mtime
        self._entries: list[Entry] = []
        self._names: set[str] = set()

    def add(self, entry: Entry) -> None:
        _check_name(entry.name)
        if entry.name in self._names:
            raise CpioError(f"duplicate cpio member: {entry.name}")
        self._names.add(entry.name)
        self._entries.append(entry)

    def dir(self, name: str, mode: int = 0o755, *, uid: int = 0, gid: int = 0) -> None:
        self.add(Entry(name, stat.S_IFDIR | mode, uid, gid, self._mtime))

    def file(self, name: str, data: bytes, mode: int = 0o644, *, uid: int = 0,
             gid: int = 0) -> None:
        self.add(Entry(name, stat.S_IFREG | mode, uid, gid, self._mtime, data))

    def symlink(self, name: str, target: str) -> None:
        self.add(Entry(name, stat.S_IFLNK | 0o777, 0, 0, self._mtime, target.encode()))

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self.add(Entry(name, stat.S_IFCHR | mode, 0, 0, self._mtime, b"", (major, minor)))

    def parents(self, name: str, mode: int = 0o755, *, uid: int = 0, gid: int = 0) -> None:
        """Add the missing parent directories of ``name`` (so members can be added in any depth)."""
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self._names:
                self.dir(parent, mode, uid=uid, gid=gid)

    def render(self) -> bytes:
        out = bytearray()
        for ino, entry in enumerate([*self._entries, Entry(TRAILER, 0)], start=1):
            name = entry.name.encode() + b"\0"
            size = len(entry.data)
            out += _header(0 if entry.name == TRAILER else ino, entry, size, len(name))
            out += name + b"\0" * _pad4(_HEADER + len(name))
            out += entry.data + b"\0" * _pad4(size)
        return bytes(out)


def parse(data: bytes) -> list[Entry]:
    """Read every member of one or more concatenated newc archives (as the kernel would)."""
    entries: list[Entry] = []
    pos = 0
    while pos < len(data):
        if data[pos:pos + 4] == b"\0\0\0\0":  # padding between concatenated archives
            pos += 4
            continue
        if data[pos:pos + len(MAGIC)] != MAGIC:
            raise CpioError(f"no newc magic at offset {pos}")
        try:
            fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(_FIELDS)]
        except ValueError as exc:
            raise CpioError(f"bad header at offset {pos}") from exc
        _, mode, uid, gid, _, mtime, size, _, _, rmaj, rmin, namesize, _ = fields
        pos += _HEADER
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + _pad4(_HEADER + namesize)
        body = data[pos:pos + size]
        if len(body) != size:
            raise CpioError(f"truncated member {name!r}")
        pos += size + _pad4(size)
        if name != TRAILER:
            entries.append(Entry(name, mode, uid, gid, mtime, body, (rmaj, rmin)))
    return entries
