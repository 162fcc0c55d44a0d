"""Release effects: add a release atomically (every check first), gc, and the releases lock.

A release is built beside its final place under ``releases/.tmp-<sha>-<label>-<random>`` and
renamed into place complete, owned by the releases directory's owner (root) and read-only. gc
renames a release to ``releases/.trash-…`` before deleting it. Either prefix left by a run killed
midway is removed by the next ``add`` or ``gc``, so a killed run never leaves a partial release
under a release name.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

from agentgw.apply.lock import releases_lock
from agentgw.apply.release_sign import check_statement, sign_manifest, signing_key
from agentgw.apply.release_tree import (
    hash_source,
    seal_dir,
    stage,
    sync_fs,
    write_member,
    write_text,
)
from agentgw.errors import AgentgwError, die, usage
from agentgw.fsio import MANIFEST_FILE, fsync_dir, write_atomic
from agentgw.log import get_logger
from agentgw.model.release import FileEntry, Manifest, ReleasePolicy
from agentgw.paths import Layout
from agentgw.plan.release import (
    DEFAULT_LABEL,
    FILE_MODE,
    SIGNATURE_FILE,
    STATEMENT_SIG_FILE,
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
from agentgw.store.release import (
    gc_candidates,
    read_manifest,
    release_names,
    release_owner,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agentgw.apply.release_source import Source

log = get_logger(__name__)

# Highest version ever handed out, so versions keep going up after gc removed the newest release.
COUNTER_FILE = ".version"


class AddOptions(TypedDict, total=False):
    """The keyword options of :func:`add_release`: the manifest's time (default now), an
    off-host signature over the release statement, and whether a source others can write
    may be read."""

    created: datetime | None
    statement_sig: bytes | None
    allow_untrusted: bool


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


# add -------------------------------------------------------------------------------------------


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
    **options: Unpack[AddOptions],
) -> AddResult:
    """Add ``src`` (a directory or tarball) as release ``<sha>-<label>``.

    Every check (names, key and policy, every source member, an existing release with other
    content) runs before anything is written. Adding the same content again changes nothing.
    """
    created, statement_sig = options.get("created"), options.get("statement_sig")
    allow_untrusted = options.get("allow_untrusted", False)
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
            unchanged = _existing(layout, target, hash_source(source, planned))
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
                layout, source, planned, owner, _Build(name, version, when, signer, statement_sig)
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


@dataclass(frozen=True)
class _Build:
    """What a new release tree is made as: its name, version, time and signatures."""

    name: str
    version: int
    created: str
    signer: Ed25519PrivateKey | None
    statement_sig: bytes | None


def _build(
    layout: Layout, source: Source, planned: list[Planned], owner: tuple[int, int], what: _Build
) -> Manifest:
    name, version, created = what.name, what.version, what.created
    signer, statement_sig = what.signer, what.statement_sig
    sha, _, label = name.partition("-")
    tmp = layout.releases / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
    os.mkdir(tmp, 0o700)
    try:
        files = stage(source, planned, tmp, owner)
        manifest = Manifest(sha=sha, label=label, version=version, created=created, files=files)
        write_text(tmp / MANIFEST_FILE, render_manifest(manifest), owner)
        if signer is not None:
            write_text(
                tmp / SIGNATURE_FILE, render_signature(sign_manifest(signer, manifest)), owner
            )
        if statement_sig is not None:
            check_statement(manifest, statement_sig)
            write_member(tmp / STATEMENT_SIG_FILE, io.BytesIO(statement_sig), FILE_MODE, owner)
        seal_dir(tmp, owner)
        # Every file, link and directory of the tree is on disk before its name appears.
        sync_fs(tmp)
        os.rename(tmp, layout.releases / name)
    except BaseException:
        _remove_tree(tmp)
        raise
    fsync_dir(layout.releases)
    return manifest


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
