"""Writing a release tree: members staged from a source with their hashes, modes and owner, the
whole tree synced to disk and sealed read-only before its name appears.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING

from agentgw.model.release import FileEntry
from agentgw.plan.release import (
    DIR_MODE,
    FILE_MODE,
    SYMLINK_MODE,
    Planned,
    plan_tree,
    render_mode,
)

if TYPE_CHECKING:
    from agentgw.apply.release_source import Source

CHUNK = 1 << 20


def _entry(planned: Planned, sha256: str | None = None, size: int = 0) -> FileEntry:
    if planned.type == "symlink":
        size = len(planned.target.encode())
        return FileEntry(
            path=planned.path,
            type="symlink",
            mode=render_mode(SYMLINK_MODE),
            size=size,
            target=planned.target,
        )
    return FileEntry(
        path=planned.path,
        type=planned.type,
        mode=render_mode(planned.mode),
        size=size,
        sha256=sha256,
    )


def _in_source_order(planned: list[Planned]) -> list[Planned]:
    """Files in the order the source holds them: a compressed tarball read out of order is
    decompressed again from its start for every backward seek."""
    return sorted((p for p in planned if p.type != "dir"), key=lambda p: p.origin)


def hash_source(source: Source, planned: list[Planned]) -> tuple[FileEntry, ...]:
    """The manifest entries a source would produce, reading it without writing anything."""
    entries = {p.path: _entry(p) for p in planned if p.type != "file"}
    for item in _in_source_order(planned):
        if item.type == "file":
            with source.open(item.origin) as stream:
                digest, size = _copy(stream, None)
            entries[item.path] = _entry(item, digest, size)
    return tuple(entries[p.path] for p in planned)


def source_files(src: Path) -> tuple[FileEntry, ...]:
    """What ``src`` (a directory or tarball) becomes as a release, its manifest's files, without
    writing anything: what ``release sign`` signs off-host. A virtualenv's interpreter link is
    taken as it is; each host that adds the release checks it against its own interpreters."""
    from agentgw.apply.release_source import open_source

    with open_source(src) as source:
        links = {e.link for e in source.entries if e.kind == "symlink" and e.link.startswith("/")}
        planned = plan_tree(source.entries, os.fspath(src), links)
        return hash_source(source, planned)


def _copy(stream: IO[bytes], out: IO[bytes] | None) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest(), size


def write_member(
    path: Path, stream: IO[bytes], mode: int, owner: tuple[int, int]
) -> tuple[str, int]:
    """Write a new file with its final owner and mode; returns its sha256 and size. Durable
    once :func:`sync_fs` ran on its filesystem."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        digest, size = _copy(stream, out)
        out.flush()
        os.fchown(fd, *owner)
        os.fchmod(fd, mode)
    return digest, size


def sync_fs(path: Path) -> None:
    """Make everything written under ``path`` durable at once: syncfs(2) on its filesystem is
    one journal commit, where an fsync per file was one each (2.8 s of a 6.4 s add of 10,000
    files here: make bench, bench_runtime). os.sync() where syncfs is missing."""
    import ctypes  # only adding a release pays for it

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def seal_dir(path: Path, owner: tuple[int, int]) -> None:
    """Make a finished directory read-only (its entries are already written)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, *owner)
        os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)


def stage(
    source: Source, planned: list[Planned], tmp: Path, owner: tuple[int, int]
) -> tuple[FileEntry, ...]:
    """Build the planned tree under ``tmp``; the manifest entries come from what was written."""
    entries: dict[str, FileEntry] = {}
    for item in planned:
        if item.type == "dir":
            os.mkdir(tmp / item.path, 0o700)
            entries[item.path] = _entry(item)
    for item in _in_source_order(planned):
        dest = tmp / item.path
        if item.type == "symlink":
            os.symlink(item.target, dest)
            os.lchown(dest, *owner)
            entries[item.path] = _entry(item)
        else:
            with source.open(item.origin) as stream:
                digest, size = write_member(dest, stream, item.mode, owner)
            entries[item.path] = _entry(item, digest, size)
    # Deepest first: a directory turns read-only only once everything inside it is written.
    for item in reversed(planned):
        if item.type == "dir":
            seal_dir(tmp / item.path, owner)
    return tuple(entries[p.path] for p in planned)


def write_text(path: Path, text: str, owner: tuple[int, int]) -> None:
    write_member(path, io.BytesIO(text.encode()), FILE_MODE, owner)
