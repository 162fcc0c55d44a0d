"""Release effects: add a release atomically (every check first), gc, and the releases lock.

A release is built beside its final place under ``releases/.tmp-<sha>-<label>-<random>`` and
renamed into place complete, owned by the releases directory's owner (root) and read-only. gc
renames a release to ``releases/.trash-…`` before deleting it. Either prefix left by a run killed
midway is removed by the next ``add`` or ``gc``, so a killed run never leaves a partial release
under a release name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from agentgw.apply.release_sign import check_statement, sign_manifest, signing_key
from agentgw.errors import AgentgwError, Exit, die, usage
from agentgw.fsio import MANIFEST_FILE, fsync_dir, write_atomic
from agentgw.log import get_logger
from agentgw.model.release import FileEntry, Manifest, ReleasePolicy
from agentgw.observe.release import (
    gc_candidates,
    read_manifest,
    release_names,
    release_owner,
)
from agentgw.paths import Layout
from agentgw.plan.release import (
    DEFAULT_LABEL,
    DIR_MODE,
    FILE_MODE,
    SIGNATURE_FILE,
    STATEMENT_SIG_FILE,
    SYMLINK_MODE,
    TMP_PREFIX,
    TRASH_PREFIX,
    Planned,
    check_label,
    check_sha,
    next_version,
    plan_tree,
    release_name,
    render_created,
    render_manifest,
    render_mode,
    render_signature,
)
from agentgw.plan.tree_diff import same_tree

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agentgw.apply.release_source import Source

log = get_logger(__name__)

CHUNK = 1 << 20
# Highest version ever handed out, so versions keep going up after gc removed the newest release.
COUNTER_FILE = ".version"


@dataclass(frozen=True)
class AddResult:
    """What ``add_release`` did: ``created`` is False when the same release was already there;
    ``removed`` names the leftovers of interrupted runs it removed first."""

    manifest: Manifest
    path: Path
    created: bool
    removed: tuple[str, ...]


@dataclass(frozen=True)
class GcResult:
    removed: tuple[str, ...]
    leftovers: tuple[str, ...]


@contextlib.contextmanager
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


# add -------------------------------------------------------------------------------------------


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


def _hash_source(source: Source, planned: list[Planned]) -> tuple[FileEntry, ...]:
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
        return _hash_source(source, planned)


def _copy(stream: IO[bytes], out: IO[bytes] | None) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return digest.hexdigest(), size


def _write(path: Path, stream: IO[bytes], mode: int, owner: tuple[int, int]) -> tuple[str, int]:
    """Write a new file with its final owner and mode; returns its sha256 and size. Durable
    once :func:`_sync_fs` ran on its filesystem."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        digest, size = _copy(stream, out)
        out.flush()
        os.fchown(fd, *owner)
        os.fchmod(fd, mode)
    return digest, size


def _sync_fs(path: Path) -> None:
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


def _seal_dir(path: Path, owner: tuple[int, int]) -> None:
    """Make a finished directory read-only (its entries are already written)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, *owner)
        os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)


def _stage(
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
                digest, size = _write(dest, stream, item.mode, owner)
            entries[item.path] = _entry(item, digest, size)
    # Deepest first: a directory turns read-only only once everything inside it is written.
    for item in reversed(planned):
        if item.type == "dir":
            _seal_dir(tmp / item.path, owner)
    return tuple(entries[p.path] for p in planned)


def _read_counter(layout: Layout) -> int:
    path = layout.releases / COUNTER_FILE
    try:
        return int(path.read_text().strip())
    except FileNotFoundError:
        return 0
    except ValueError as exc:
        raise die(
            f"{path} does not hold a version number",
            hint="write the highest version in 'agentgw release list' into it",
        ) from exc


def _record_version(layout: Layout, version: int) -> None:
    """Raise the version counter to ``version``; it is written after the rename, so a kill in
    between is covered by also counting the releases present."""
    if _read_counter(layout) >= version:
        return
    tmp = layout.releases / f"{TMP_PREFIX}version-{secrets.token_hex(4)}"
    write_atomic(layout.releases / COUNTER_FILE, f"{version}\n", tmp=tmp)


def _versions(layout: Layout) -> list[int]:
    versions = []
    for name in release_names(layout):
        with contextlib.suppress(AgentgwError):
            versions.append(read_manifest(layout.releases / name).version)
    return versions


def allowed_interpreters(configured: Iterable[str]) -> frozenset[str]:
    """The configured interpreters and what each resolves to on this host (a venv made with
    /usr/bin/python3 links to it; one made from its target links there)."""
    allowed = set()
    for path in configured:
        allowed.add(path)
        allowed.add(os.path.realpath(path))
    return frozenset(allowed)


def _check_releases_dir(layout: Layout) -> tuple[int, int]:
    """The owner release trees get; refuses a releases dir others could rename entries in."""
    owner = release_owner(layout)
    mode = stat.S_IMODE(os.stat(layout.releases).st_mode)
    if os.geteuid() == 0 and (owner[0] != 0 or mode & 0o022):
        raise die(
            f"{layout.releases} must be owned by root and writable only by root "
            f"(it is {owner[0]}:{owner[1]} {render_mode(mode)})",
            hint=f"chown root:root {layout.releases} && chmod 0755 {layout.releases}",
        )
    return owner


def add_release(
    layout: Layout,
    src: Path,
    sha: str,
    label: str = DEFAULT_LABEL,
    sign_key: Path | None = None,
    policy: ReleasePolicy | None = None,
    *,
    created: datetime | None = None,
    statement_sig: bytes | None = None,
    allow_untrusted: bool = False,
) -> AddResult:
    """Add ``src`` (a directory or tarball) as release ``<sha>-<label>``.

    Every check (names, key and policy, every source member, an existing release with other
    content) runs before anything is written. Adding the same content again changes nothing.
    """
    policy = policy or ReleasePolicy()
    name = release_name(check_sha(sha), check_label(label))
    signer = signing_key(sign_key, policy, statement_sig)
    # Here, not at the top: tarfile, lzma and zlib are for adding, not for promote.
    from agentgw.apply.release_source import open_source

    with open_source(src, allow_untrusted=allow_untrusted) as source:
        planned = plan_tree(
            source.entries, os.fspath(src), allowed_interpreters(policy.interpreters)
        )
        target = layout.releases / name
        if target.exists():
            unchanged = _existing(layout, target, _hash_source(source, planned))
            with releases_lock(layout):
                removed = remove_leftovers(layout)
                _record_version(layout, unchanged.version)
            return AddResult(unchanged, target, created=False, removed=removed)
        layout.releases.mkdir(parents=True, exist_ok=True, mode=0o755)
        owner = _check_releases_dir(layout)
        with releases_lock(layout):
            if target.exists():
                raise die(f"release {name} was added meanwhile", hint="run the add again")
            removed = remove_leftovers(layout)
            version = next_version(_versions(layout), _read_counter(layout))
            when = render_created(created or datetime.now(UTC))
            manifest = _build(
                layout, source, planned, name, owner, signer, version, when, statement_sig
            )
            _record_version(layout, version)
    log.info("release_added", release=name, version=version, signed=signer is not None)
    return AddResult(manifest, target, created=True, removed=removed)


def _existing(layout: Layout, target: Path, files: tuple[FileEntry, ...]) -> Manifest:
    existing = read_manifest(target)
    if not same_tree(existing.files, files):
        raise die(
            f"release {target.name} already exists with different content",
            hint="add it under another --label; a release never changes once added",
        )
    return existing


def _build(
    layout: Layout,
    source: Source,
    planned: list[Planned],
    name: str,
    owner: tuple[int, int],
    signer: Ed25519PrivateKey | None,
    version: int,
    created: str,
    statement_sig: bytes | None = None,
) -> Manifest:
    sha, _, label = name.partition("-")
    tmp = layout.releases / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    os.mkdir(tmp, 0o700)
    try:
        files = _stage(source, planned, tmp, owner)
        manifest = Manifest(sha=sha, label=label, version=version, created=created, files=files)
        _write_text(tmp / MANIFEST_FILE, render_manifest(manifest), owner)
        if signer is not None:
            _write_text(
                tmp / SIGNATURE_FILE, render_signature(sign_manifest(signer, manifest)), owner
            )
        if statement_sig is not None:
            check_statement(manifest, statement_sig)
            _write(tmp / STATEMENT_SIG_FILE, io.BytesIO(statement_sig), FILE_MODE, owner)
        _seal_dir(tmp, owner)
        # Every file, link and directory of the tree is on disk before its name appears.
        _sync_fs(tmp)
        os.rename(tmp, layout.releases / name)
    except BaseException:
        _remove_tree(tmp)
        raise
    fsync_dir(layout.releases)
    return manifest


def _write_text(path: Path, text: str, owner: tuple[int, int]) -> None:
    _write(path, io.BytesIO(text.encode()), FILE_MODE, owner)


# removal ---------------------------------------------------------------------------------------


def _remove_tree(path: Path) -> None:
    """Delete a (read-only) tree of ours; directories are made writable first so this also
    works without root's override of file modes."""
    if not path.is_dir() or path.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    pending = [path]
    while pending:
        current = pending.pop()
        os.chmod(current, 0o700)
        with os.scandir(current) as entries:
            pending.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    shutil.rmtree(path)


def remove_leftovers(layout: Layout) -> tuple[str, ...]:
    """Remove what interrupted adds and gcs left (``.tmp-*``, ``.trash-*``); call it holding the
    releases lock, so no running operation's work is taken for a leftover."""
    removed = []
    for entry in sorted(os.scandir(layout.releases), key=lambda e: e.name):
        if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
            _remove_tree(Path(entry.path))
            removed.append(entry.name)
            log.warning("release_leftover_removed", path=entry.path)
    if removed:
        fsync_dir(layout.releases)
    return tuple(removed)


def gc(layout: Layout, keep: int) -> GcResult:
    """Remove all but the ``keep`` newest releases, never one a profile's current or previous
    points at. Each is renamed to ``.trash-…`` first, so a kill never leaves half a release
    under its name."""
    if keep < 0:
        raise usage(f"--keep {keep}: must be 0 or more", hint="e.g. --keep 3")
    if not layout.releases.is_dir():
        return GcResult(removed=(), leftovers=())
    with releases_lock(layout):
        leftovers = remove_leftovers(layout)
        doomed = gc_candidates(layout, keep)
        for name in doomed:
            trash = layout.releases / f"{TRASH_PREFIX}{name}-{secrets.token_hex(4)}"
            os.rename(layout.releases / name, trash)
            fsync_dir(layout.releases)
            _remove_tree(trash)
            log.info("release_removed", release=name)
    return GcResult(removed=tuple(doomed), leftovers=leftovers)
