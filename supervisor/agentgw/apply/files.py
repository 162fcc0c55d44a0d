"""Atomic file effects: render to a string, write a temp file beside the target, rename."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

TMP_SUFFIX = ".agentgw-tmp"


def ids(owner: str, group: str) -> tuple[int, int]:
    uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
    gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path(path: Path) -> Path:
    """The one temp name of a target: a rerun after a kill overwrites it instead of adding more."""
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


def write_atomic(path: Path, content: str | bytes, *, owner: str, group: str, mode: int) -> None:
    """Write ``content`` with exact owner and mode, visible to readers only once complete."""
    data = content.encode() if isinstance(content, str) else content
    uid, gid = ids(owner, group)
    tmp = tmp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def ensure_dir(path: Path, *, owner: str, group: str, mode: int) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(f"{path} exists and is not a directory")
    path.mkdir(mode=0o700, exist_ok=True)
    uid, gid = ids(owner, group)
    os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, mode)


def flip_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically: symlink to a temp name, rename over, fsync.

    Never unlink-then-link: readers would see ENOENT in between (SECURITY_NOTES.md).
    """
    tmp = tmp_path(link)
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
