"""Release sources: a directory or a tarball read as entries, and git commits exported as tarballs.

Reading only: what a source may become is decided by ``plan.release.plan_tree``; its bytes are
read through ``Source.open`` by index, never by following a name inside the source.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

from agentgw import run
from agentgw.errors import die, usage
from agentgw.plan.release import SourceEntry, SourceKind, check_sha, tar_entry

TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


class Source(Protocol):
    """A release source: its entries, and the bytes of the regular-file ones."""

    entries: list[SourceEntry]

    def open(self, index: int) -> IO[bytes]: ...


class _DirSource:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries = _scan_source(root)

    def open(self, index: int) -> IO[bytes]:
        path = self.root / self.entries[index].name
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise die(f"{path} changed while it was being added", hint="add it again")
        return os.fdopen(fd, "rb")


class _TarSource:
    def __init__(self, archive: tarfile.TarFile) -> None:
        self.archive = archive
        self.members = archive.getmembers()
        self.entries = [tar_entry(member) for member in self.members]

    def open(self, index: int) -> IO[bytes]:
        stream = self.archive.extractfile(self.members[index])
        if stream is None:
            raise die(f"tar member {self.members[index].name!r} has no data")
        return stream


def _source_kind(mode: int) -> SourceKind:
    kinds: tuple[tuple[int, SourceKind], ...] = (
        (stat.S_IFREG, "file"),
        (stat.S_IFDIR, "dir"),
        (stat.S_IFLNK, "symlink"),
        (stat.S_IFCHR, "chardev"),
        (stat.S_IFBLK, "blockdev"),
        (stat.S_IFIFO, "fifo"),
        (stat.S_IFSOCK, "socket"),
    )
    return next((kind for fmt, kind in kinds if stat.S_IFMT(mode) == fmt), "other")


def _scan_source(root: Path) -> list[SourceEntry]:
    """A source directory as entries, without following any symlink inside it."""
    found: list[SourceEntry] = []
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(root / rel) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                path = f"{rel}/{entry.name}" if rel else entry.name
                info = entry.stat(follow_symlinks=False)
                kind = _source_kind(info.st_mode)
                link = os.readlink(entry.path) if kind == "symlink" else ""
                found.append(SourceEntry(path, kind, stat.S_IMODE(info.st_mode), link))
                if kind == "dir":
                    pending.append(path)
    return found


@contextlib.contextmanager
def open_source(src: Path) -> Iterator[Source]:
    if src.is_dir():
        yield _DirSource(src)
        return
    if not src.is_file():
        raise usage(f"{src}: no such directory or tarball", hint="SRC is a directory or a tarball")
    try:
        archive = tarfile.open(src, "r:*")
    except (*TAR_ERRORS, OSError) as exc:
        raise usage(
            f"{src} is neither a directory nor a readable tarball",
            hint="SRC is a directory, or a tar archive (optionally gzip, bzip2 or xz compressed)",
        ) from exc
    with archive:
        # Reading members can fail at any point of an add, so the whole use is covered.
        try:
            yield _TarSource(archive)
        except TAR_ERRORS as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise usage(f"{src}: damaged tarball: {detail}", hint="export it again") from exc


@contextlib.contextmanager
def exported_commit(repo: Path, sha: str) -> Iterator[Path]:
    """``git archive`` of commit ``sha`` of ``repo`` as a temporary tarball."""
    check_sha(sha)
    found = run.run(
        ["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}"], check=False
    )
    commit = found.stdout.strip()
    if found.returncode != 0 or not commit.startswith(sha):
        raise usage(f"{repo} has no commit {sha}", hint="give a commit of that repository")
    with tempfile.TemporaryDirectory(prefix="agentgw-git-") as scratch:
        tarball = Path(scratch) / f"{sha}.tar"
        run.run(["git", "-C", repo, "archive", "--format=tar", f"--output={tarball}", commit])
        yield tarball
