"""Release sources: a directory or a tarball read as entries, and git commits exported as tarballs.

Reading only: what a source may become is decided by ``plan.release.plan_tree``; its bytes are
read through ``Source.open`` by index, never by following a name inside the source.
"""

from __future__ import annotations

import contextlib
import io
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
    """A source directory read through directory file descriptors: every component is opened
    with O_NOFOLLOW relative to its parent's fd, and each file must still be the inode the
    scan saw. Whoever can write the tree may swap a directory for a symlink (to /etc, say)
    between the scan and the copy: that is refused instead of copied."""

    def __init__(self, root: Path, *, allow_untrusted: bool) -> None:
        self.root = root
        self.fd = os.open(root, DIR_FLAGS)
        try:
            self.entries, self.ids, untrusted = _scan_source(self.fd)
        except BaseException:
            os.close(self.fd)
            raise
        if untrusted and not allow_untrusted:
            os.close(self.fd)
            raise usage(
                f"{root} can be changed by a user other than root ({untrusted})",
                hint="build releases in a directory only root can write, or pass "
                "--allow-untrusted-source (each file is then read through O_NOFOLLOW "
                "directory fds and must be the inode scanned)",
            )

    def close(self) -> None:
        os.close(self.fd)

    def open(self, index: int) -> IO[bytes]:
        name = self.entries[index].name
        *dirs, leaf = name.split("/")
        fds: list[int] = []
        try:
            at = self.fd
            for part in dirs:
                at = os.open(part, DIR_FLAGS, dir_fd=at)
                fds.append(at)
            fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=at)
        except OSError as exc:
            raise die(f"{self.root / name} changed while it was being added ({exc.strerror})",
                      hint="add it again from a tree nobody else writes") from exc
        finally:
            for opened in fds:
                os.close(opened)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != self.ids[index]:
            os.close(fd)
            raise die(f"{self.root / name} changed while it was being added",
                      hint="add it again from a tree nobody else writes")
        return os.fdopen(fd, "rb")


DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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


def _scan_source(
    top: int,
) -> tuple[list[SourceEntry], list[tuple[int, int]], str]:
    """A source directory (open as ``top``) as entries and their inode identities, without
    following any symlink inside it; and, when run as root, why someone else could change it
    ("" when nobody can). Depth first, so only one fd per level is open."""
    found: list[SourceEntry] = []
    ids: list[tuple[int, int]] = []
    untrusted = [_writable_by_others(os.fstat(top), ".")]

    def scan(fd: int, rel: str) -> None:
        for name in sorted(os.listdir(fd)):
            path = f"{rel}/{name}" if rel else name
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            kind = _source_kind(info.st_mode)
            link = os.readlink(name, dir_fd=fd) if kind == "symlink" else ""
            found.append(SourceEntry(path, kind, stat.S_IMODE(info.st_mode), link))
            ids.append((info.st_dev, info.st_ino))
            if kind != "dir":
                continue
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
            try:
                opened = os.fstat(child)
                if (opened.st_dev, opened.st_ino) != ids[-1]:
                    raise die(f"{path} changed while it was being scanned",
                              hint="add it again from a tree nobody else writes")
                untrusted.append(_writable_by_others(info, path))
                scan(child, path)
            finally:
                os.close(child)

    scan(top, "")
    return found, ids, next((why for why in untrusted if why), "")


def _writable_by_others(info: os.stat_result, path: str) -> str:
    """Why a user other than root could add, remove or swap entries of this directory."""
    if os.geteuid() != 0:
        return ""  # not root: nothing is read with more rights than its owner has
    if info.st_uid != 0:
        return f"{path} belongs to uid {info.st_uid}"
    if stat.S_IMODE(info.st_mode) & 0o022:
        return f"{path} is group- or world-writable"
    return ""


@contextlib.contextmanager
def open_source(src: Path, *, allow_untrusted: bool = False) -> Iterator[Source]:
    if src.is_dir():
        source = _DirSource(src, allow_untrusted=allow_untrusted)
        try:
            yield source
        finally:
            source.close()
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
    """Commit ``sha`` of ``repo`` as a temporary tarball, built from the raw git objects.

    Not ``git archive``: it applies the repository's own filters (smudge, textconv,
    export-subst) from its config and attributes, and that repository may belong to the user
    who runs ``sudo agentgw``: its commands would run as root. Here git only lists the tree
    (``ls-tree``) and prints blobs (``cat-file --batch``), which run no filter and no hook,
    with a scrubbed environment, no system or global config, and core.fsmonitor off.
    """
    check_sha(sha)
    with tempfile.TemporaryDirectory(prefix="agentgw-git-") as scratch:
        env = _git_env(Path(scratch), repo)
        found = run.run(
            [*GIT, "-C", repo, "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}"],
            check=False, env=env,
        )
        commit = found.stdout.strip()
        if found.returncode != 0 or not commit.startswith(sha):
            raise usage(f"{repo} has no commit {sha}", hint="give a commit of that repository")
        listing = run.run([*GIT, "-C", repo, "ls-tree", "-r", "-z", "--full-tree", commit],
                          env=env).stdout
        entries = [_tree_entry(item) for item in listing.split("\0") if item]
        for _, kind, _, path in entries:
            if kind != "blob":
                raise usage(f"{path}: a {kind} (submodule) in the commit",
                            hint="a release holds files; vendor the submodule's files instead")
        blobs = _cat_blobs(repo, [e[2] for e in entries], env)
        tarball = Path(scratch) / f"{sha}.tar"
        with tarfile.open(tarball, "w", format=tarfile.PAX_FORMAT) as tar:
            for mode, kind, obj, path in entries:
                _add_member(tar, mode, kind, path, blobs[obj])
        yield tarball


GIT = ["git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"]


def _git_env(scratch: Path, repo: Path) -> dict[str, str]:
    """Nothing from the caller: no GIT_* variables, no HOME config; the one global setting is
    that this repository is trusted for reading (it may be the invoking user's)."""
    config = scratch / "gitconfig"
    config.write_text(f"[safe]\n\tdirectory = {os.path.abspath(repo)}\n")
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": os.fspath(scratch),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.fspath(config),
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",
    }


def _tree_entry(item: str) -> tuple[str, str, str, str]:
    meta, _, path = item.partition("\t")
    mode, kind, obj = meta.split()
    return mode, kind, obj, path


def _cat_blobs(repo: Path, objects: list[str], env: dict[str, str]) -> dict[str, bytes]:
    """The raw content of each object, in one ``git cat-file --batch``."""
    wanted = sorted(set(objects))
    proc = run.popen_pipes([*GIT, "-C", repo, "cat-file", "--batch"], env=env)
    out, err = proc.communicate("".join(f"{o}\n" for o in wanted).encode())
    if proc.returncode != 0:
        raise die(f"git cat-file failed in {repo}: {err.decode(errors='replace').strip()}")
    blobs: dict[str, bytes] = {}
    at = 0
    for obj in wanted:
        end = out.index(b"\n", at)
        header = out[at:end].decode().split()
        if len(header) != 3 or header[0] != obj:
            raise die(f"git cat-file gave {header!r} for {obj} in {repo}")
        size = int(header[2])
        blobs[obj] = out[end + 1 : end + 1 + size]
        at = end + 1 + size + 1
    return blobs


def _add_member(tar: tarfile.TarFile, mode: str, kind: str, path: str, data: bytes) -> None:
    info = tarfile.TarInfo(path)
    if mode == "120000":
        info.type, info.linkname = tarfile.SYMTYPE, data.decode("utf-8", "surrogateescape")
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), 0o755 if mode == "100755" else 0o644
        tar.addfile(info, io.BytesIO(data))
