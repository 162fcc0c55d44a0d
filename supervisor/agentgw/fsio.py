"""The file effects and reads every layer needs: atomic writes, symlink flips, fsync; bounded
reads of files a profile can write; the release manifest's head; time stamps.

Atomic writes render to a string, write a temp file beside the target and rename it over, then
fsync the directory; a symlink flip is a temp symlink renamed over the link (never
unlink-then-link: readers would see ENOENT in between).

Reading what a profile's user can write, as root, without trusting it:

A gateway runs as ``agent-<p>`` and owns its logs directory, so ``launch.json`` and
``ready.json`` there are whatever that user made them: a FIFO (an open for reading blocks
forever), a symlink to /dev/zero (a read never ends), a 10 GB file, JSON nested 100,000 deep
(the parser's RecursionError), text with terminal escapes. Every such read goes through
:func:`read_untrusted`: the last component is never followed (O_NOFOLLOW; the directories above
are root's), the open never blocks (O_NONBLOCK), only a regular file is read, at most ``cap``
bytes, and every failure is a :class:`Unreadable` with a reason. :func:`clean` makes anything
echoed from such a file safe for a terminal.
"""

from __future__ import annotations

import functools
import grp
import json
import os
import pwd
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

RECORD_CAP = 64 * 1024
TMP_SUFFIX = ".agentgw-tmp"
MANIFEST_FILE = "manifest.json"
FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
CONTROL = dict.fromkeys([*range(32), 127], "?")
KINDS = (
    (stat.S_ISFIFO, "a fifo"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class Unreadable(Exception):
    """Why a file a profile can write was not read (the reason, ready to show)."""


def _kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def read_untrusted(path: Path | str, cap: int = RECORD_CAP) -> bytes:
    """At most ``cap`` bytes of the regular file at ``path``; FileNotFoundError when it is
    absent, Unreadable for anything else that is not a small regular file."""
    try:
        fd = os.open(path, FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: O_NOFOLLOW met a symlink
            raise Unreadable("is a symlink (not followed)") from None
        raise Unreadable(exc.strerror or type(exc).__name__) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(f"is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > cap:
            raise Unreadable(f"is {info.st_size} bytes, more than the {cap} allowed")
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, cap + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > cap:
            raise Unreadable(f"grew past the {cap} bytes allowed")
        return b"".join(chunks)
    except OSError as exc:
        raise Unreadable(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)


def loads_untrusted(data: bytes | str) -> Any:
    """json.loads that fails with ValueError, never RecursionError or MemoryError."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except MemoryError:
        raise ValueError("JSON too large to parse") from None


def clean(text: str, limit: int = 300) -> str:
    """``text`` with control characters (terminal escapes, CR, LF) replaced, cut to ``limit``."""
    text = text.translate(CONTROL)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Read:
    """A JSON object or text read from the host: ``data``, or why not (``None`` = absent)."""

    data: Any = None
    error: str | None = None


def why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def read_json(path: Path, cap: int = RECORD_CAP) -> Read:
    """A JSON document; absent is ``Read()``, unreadable or invalid is ``Read(error=...)``.

    Read as a file its profile's user may have planted: never through a symlink, never
    blocking, regular files of at most ``cap`` bytes, any nesting.
    """
    try:
        return Read(data=loads_untrusted(read_untrusted(path, cap)))
    except FileNotFoundError:
        return Read()
    except Unreadable as exc:
        return Read(error=f"{path}: {exc}")
    except OSError as exc:
        return Read(error=f"{path}: {why(exc)}")
    except ValueError as exc:
        return Read(error=f"{path}: not valid JSON ({clean(str(exc), 80)})")


# --- time stamps --------------------------------------------------------------------------------


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: object) -> float | None:
    """Seconds since the epoch of an ISO 8601 time with a zone (``Z`` allowed), else None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


# --- release manifests --------------------------------------------------------------------------


def read_manifest_bytes(release: Path) -> bytes:
    """The manifest of a release tree (root's, immutable: no bound); OSError when unreadable."""
    return (release / MANIFEST_FILE).read_bytes()


class ManifestHead(NamedTuple):
    """The top-level fields of a manifest that identify a release (unvalidated JSON values)."""

    sha: Any
    label: Any
    version: Any
    created: Any


@functools.lru_cache(maxsize=512)
def _manifest_head(release: str, _identity: tuple[int, int, int]) -> ManifestHead | str:
    """The head of a manifest (or the problem); keyed by inode, size and mtime.

    Releases are immutable, and a manifest lists every file of a tree, so it is parsed once.
    """
    try:
        data = json.loads(read_manifest_bytes(Path(release)))
    except OSError as exc:
        return f"{MANIFEST_FILE}: {why(exc)}"
    except ValueError:
        return f"{MANIFEST_FILE} is not valid JSON"
    if not isinstance(data, dict):
        return f"{MANIFEST_FILE} is not a JSON object"
    return ManifestHead(*(data.get(key) for key in ManifestHead._fields))


def read_manifest_head(release: Path) -> ManifestHead | str:
    """The identifying fields of ``release``'s manifest, or why it has none."""
    try:
        st = (release / MANIFEST_FILE).stat()
    except OSError as exc:
        return f"no readable {MANIFEST_FILE} ({why(exc)})"
    return _manifest_head(os.fspath(release), (st.st_ino, st.st_size, st.st_mtime_ns))


# --- atomic writes ------------------------------------------------------------------------------


def ids(owner: str, group: str) -> tuple[int, int]:
    uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
    gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    return uid, gid


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path(path: Path) -> Path:
    """The one temp name of a target: a rerun after a kill overwrites it instead of adding more."""
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


def write_atomic(
    path: Path,
    content: str | bytes,
    *,
    mode: int | None = None,
    owner: str | None = None,
    group: str | None = None,
    tmp: Path | None = None,
) -> None:
    """Write ``content``, visible to readers only once complete, with exact ``mode`` (else as
    the umask makes a new file) and owner (when given). ``tmp`` names the temp file when
    several writers may race on one target; by default it is :func:`tmp_path`."""
    data = content.encode() if isinstance(content, str) else content
    tmp = tmp if tmp is not None else tmp_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666 if mode is None else 0o600)
    try:
        if owner is not None and group is not None:
            os.fchown(fd, *ids(owner, group))
        if mode is not None:
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
    """Point ``link`` at ``target`` atomically: symlink to a temp name, rename over, fsync."""
    tmp = tmp_path(link)
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
