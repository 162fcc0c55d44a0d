"""Pure release planning: names, source safety, manifest bytes, verification diffs, gc.

Nothing here touches the disk. ``observe`` and ``apply`` turn a source (directory or tarball)
into ``SourceEntry`` records and a release tree into ``ObservedEntry`` records; this module
decides whether they are safe, what the manifest says, and what differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tarfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from agentgw.errors import usage
from agentgw.fsio import MANIFEST_FILE
from agentgw.model.release import (
    LABEL_PATTERN,
    SHA_PATTERN,
    EntryType,
    FileEntry,
    Manifest,
    ManifestSignature,
)

DEFAULT_LABEL = "release"
SIGNATURE_FILE = "manifest.sig"
# The signature made once, off-host, over the release's host-independent statement.
STATEMENT_SIG_FILE = "release.sig"
RESERVED = frozenset({MANIFEST_FILE, SIGNATURE_FILE, STATEMENT_SIG_FILE})
STATEMENT_HEAD = "agentgw release statement v1"
# Work in progress of add and gc lives beside the releases under these prefixes, so a run
# killed at any moment leaves only names the next run recognises and removes.
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
# Prefixed to the manifest bytes before signing, so a release signature can never be replayed
# as the signature of another kind of record signed with the same key.
SIGNING_CONTEXT = b"agentgw release manifest v1\n"

FILE_MODE = 0o444
EXEC_MODE = 0o555
DIR_MODE = 0o555
SYMLINK_MODE = 0o777
MIN_PREFIX = 7
VENV_CFG = ".venv/pyvenv.cfg"
VENV_LINK_RE = re.compile(r"\.venv/bin/python(?:3(?:\.[0-9]+)?)?")

SHA_RE = re.compile(SHA_PATTERN)
LABEL_RE = re.compile(LABEL_PATTERN)
PREFIX_RE = re.compile(r"[0-9a-f]{7,40}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

SourceKind = Literal[
    "file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "socket", "other"
]
FORBIDDEN: dict[SourceKind, str] = {
    "chardev": "device node (character device)",
    "blockdev": "device node (block device)",
    "fifo": "fifo (named pipe)",
    "socket": "socket",
    "other": "unsupported file type",
}
SOURCE_HINT = (
    "a release holds regular files, directories and symlinks that stay inside it: "
    "no '..', no absolute paths, no links out, no device nodes or fifos"
)


@dataclass(frozen=True)
class SourceEntry:
    """One member of a release source as found: its raw name, kind, mode bits and link text."""

    name: str
    kind: SourceKind
    mode: int = 0
    link: str = ""


@dataclass(frozen=True)
class Planned:
    """One path of the release tree to build; ``origin`` indexes the entry holding its bytes."""

    path: str
    type: EntryType
    mode: int
    target: str = ""
    origin: int = -1


# names -----------------------------------------------------------------------------------------


def check_sha(sha: str) -> str:
    if SHA_RE.fullmatch(sha) is None:
        raise usage(
            f"sha {sha!r} is not 7 to 40 lowercase hex digits",
            hint="pass the git commit of the release, e.g. --sha 3f9c2e1",
        )
    return sha


def check_label(label: str) -> str:
    if LABEL_RE.fullmatch(label) is None:
        raise usage(
            f"label {label!r} must be 1 to 40 characters of a-z, 0-9, '.', '_' or '-'",
            hint=f"e.g. --label {DEFAULT_LABEL} or --label canary",
        )
    return label


def release_name(sha: str, label: str) -> str:
    return f"{sha}-{label}"


def parse_release_name(name: str) -> tuple[str, str] | None:
    """``(sha, label)`` of a release directory name, or None for anything else in releases/."""
    sha, sep, label = name.partition("-")
    if not sep or SHA_RE.fullmatch(sha) is None or LABEL_RE.fullmatch(label) is None:
        return None
    return sha, label


def match_release(names: Iterable[str], ref: str) -> str:
    """The one release ``ref`` names: a full ``<sha>-<label>`` or a unique sha prefix (>= 7)."""
    known = sorted(n for n in names if parse_release_name(n) is not None)
    if ref in known:
        return ref
    if PREFIX_RE.fullmatch(ref) is None:
        raise usage(
            f"{ref!r} is not a release name or a sha prefix of 7 to 40 lowercase hex digits",
            hint="see 'agentgw release list'",
        )
    found = [n for n in known if n.partition("-")[0].startswith(ref)]
    if not found:
        raise usage(f"no release matches {ref}", hint="see 'agentgw release list'")
    if len(found) > 1:
        raise usage(
            f"{ref} is ambiguous: {', '.join(found)}",
            hint="give more digits of the sha, or the full <sha>-<label> name",
        )
    return found[0]


# source safety ---------------------------------------------------------------------------------


def tar_entry(info: tarfile.TarInfo) -> SourceEntry:
    """The kind of a tar member; its bytes are read later through its index."""
    kind: SourceKind = "other"
    if info.isreg():
        kind = "file"
    elif info.isdir():
        kind = "dir"
    elif info.issym():
        kind = "symlink"
    elif info.islnk():
        kind = "hardlink"
    elif info.ischr():
        kind = "chardev"
    elif info.isblk():
        kind = "blockdev"
    elif info.isfifo():
        kind = "fifo"
    return SourceEntry(name=info.name, kind=kind, mode=info.mode, link=info.linkname)


def _check_text(text: str) -> None:
    if CONTROL_RE.search(text) is not None:
        raise ValueError("contains a control character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("is not valid UTF-8") from exc


def normalize_name(name: str) -> str:
    """A member name as a relative path inside the tree ('' for its root); ValueError if it
    could name anything outside."""
    _check_text(name)
    if name.startswith("/"):
        raise ValueError("absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError("escapes the release tree ('..')")
    return "/".join(parts)


def check_symlink_target(path: str, target: str) -> str | None:
    """Why a symlink at ``path`` pointing at ``target`` may leave the tree, or None if it cannot.

    Lexical normalisation is not enough: with ``s -> .``, ``t -> s/..`` normalises to ``.`` but
    resolves to the tree's parent. So a target is some leading ``..`` (no more than the link's
    depth, all through real directories since no member lives under a symlink) followed only by
    names, each of which is itself a member checked the same way.
    """
    try:
        _check_text(target)
    except ValueError as exc:
        return f"symlink target {exc}"
    if not target:
        return "empty symlink target"
    if target.startswith("/"):
        return f"absolute symlink to {target!r}"
    parts = [part for part in target.split("/") if part not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ".." in parts[ups:]:
        return f"symlink to {target!r} has '..' after a name; write it without"
    if ups > path.count("/"):
        return f"symlink to {target!r} points outside the release tree"
    return None


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def file_mode(source_mode: int) -> int:
    """Installed mode of a regular file: read-only, executable when any x bit was set."""
    return EXEC_MODE if source_mode & 0o111 else FILE_MODE


def want_venv_interpreter(path: str, names: Collection[str]) -> bool:
    """Whether ``path`` is the interpreter link of the release's own virtualenv: ``.venv/bin/``
    ``python``, ``python3`` or ``python3.N`` beside a ``.venv/pyvenv.cfg``."""
    return VENV_LINK_RE.fullmatch(path) is not None and VENV_CFG in names


def check_venv_interpreter(path: str, target: str, interpreters: Collection[str]) -> str | None:
    """Why the venv interpreter link ``path -> target`` is refused, or None when the host
    allows that interpreter (its configured path or what that resolves to)."""
    if target in interpreters:
        return None
    allowed = ", ".join(sorted(interpreters)) or "none configured"
    return (
        f"the virtualenv's interpreter link points at {target!r}, which this host does not "
        f"allow (python and interpreters in agentgw.yaml allow: {allowed}); recreate the venv "
        "with an allowed interpreter (e.g. /usr/bin/python3 -m venv .venv) or with --copies"
    )


def plan_tree(
    entries: Sequence[SourceEntry], source: str, interpreters: Collection[str] = ()
) -> list[Planned]:
    """The release tree a source becomes, sorted by path; a usage error listing every unsafe
    member when any could write, link or point outside the tree.

    The one absolute link a release may hold is its own virtualenv's interpreter link
    (``.venv/bin/python3 -> /usr/bin/python3``, as ``python -m venv`` makes it), and only to
    one of ``interpreters``, the host's allowed interpreters.
    """
    problems: list[str] = []
    planned: dict[str, Planned] = {}
    names = _file_names(entries)
    for index, entry in enumerate(entries):
        try:
            path = normalize_name(entry.name)
        except ValueError as exc:
            problems.append(f"{entry.name!r}: {exc}")
            continue
        result = _plan_entry(index, entry, path, planned, names, interpreters)
        if isinstance(result, str):
            problems.append(result)
        elif result is not None:
            planned[path] = result
    implicit = _implicit_dirs(planned, problems)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise usage(
            f"refusing unsafe release source {source}: {'; '.join(problems[:3])}{more}",
            hint=SOURCE_HINT,
        )
    return sorted({**implicit, **planned}.values(), key=lambda p: p.path)


def _plan_entry(
    index: int,
    entry: SourceEntry,
    path: str,
    planned: Mapping[str, Planned],
    names: Collection[str],
    interpreters: Collection[str],
) -> Planned | str | None:
    """What one source member becomes: a planned entry, a problem, or nothing (the root, or a
    directory given twice)."""
    if entry.kind in FORBIDDEN:
        return f"{entry.name!r}: {FORBIDDEN[entry.kind]}"
    if path == "":
        if entry.kind == "dir":
            return None
        return f"{entry.name!r}: the release root must be a directory"
    if path in RESERVED:
        return f"{path}: reserved for the manifest agentgw writes"
    if path in planned:
        if entry.kind == "dir" and planned[path].type == "dir":
            return None
        return f"{path}: appears twice"
    if entry.kind == "symlink":
        why = check_symlink_target(path, entry.link)
        if why is not None and entry.link.startswith("/") and want_venv_interpreter(path, names):
            why = check_venv_interpreter(path, entry.link, interpreters)
        if why is not None:
            return f"{path}: {why}"
        return Planned(path, "symlink", SYMLINK_MODE, target=entry.link)
    if entry.kind == "hardlink":
        why, linked = _hardlink(entry.link, planned)
        if linked is None:
            return f"{path}: {why}"
        return Planned(path, "file", linked.mode, origin=linked.origin)
    if entry.kind == "file":
        return Planned(path, "file", file_mode(entry.mode), origin=index)
    return Planned(path, "dir", DIR_MODE)


def _implicit_dirs(planned: Mapping[str, Planned], problems: list[str]) -> dict[str, Planned]:
    """The directories the planned paths lie in that the source does not list; a path under a
    non-directory is added to ``problems``."""
    implicit: dict[str, Planned] = {}
    for path in planned:
        for parent in _ancestors(path):
            holder = planned.get(parent)
            if holder is None:
                implicit[parent] = Planned(parent, "dir", DIR_MODE)
            elif holder.type != "dir":
                problems.append(f"{path}: lies inside {parent}, which is a {holder.type}")
    return implicit


def _file_names(entries: Sequence[SourceEntry]) -> set[str]:
    names = set()
    for entry in entries:
        if entry.kind == "file":
            with contextlib.suppress(ValueError):
                names.add(normalize_name(entry.name))
    return names


def _hardlink(link: str, planned: Mapping[str, Planned]) -> tuple[str, Planned | None]:
    try:
        path = normalize_name(link)
    except ValueError:
        return f"hardlink to {link!r} points outside the release tree", None
    linked = planned.get(path)
    if linked is None or linked.type != "file":
        return f"hardlink to {link!r}, which is no regular file earlier in the source", None
    return "", linked


# manifests and signatures ----------------------------------------------------------------------


def render_created(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_mode(mode: int) -> str:
    return f"{mode:04o}"


def next_version(versions: Iterable[int], counter: int) -> int:
    """One above every version this host handed out, including releases gc already removed."""
    return max([counter, *versions]) + 1


def _document(manifest: Manifest) -> dict[str, object]:
    return manifest.model_dump(mode="json", exclude_none=True)


def render_manifest(manifest: Manifest) -> str:
    """``manifest.json`` as written: sorted keys, indented for people."""
    return json.dumps(_document(manifest), indent=2, sort_keys=True) + "\n"


def canonical_manifest(manifest: Manifest) -> bytes:
    """The exact bytes a signature covers: compact, sorted keys, ASCII only."""
    return json.dumps(
        _document(manifest), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode()


def content_digest(files: Iterable[FileEntry]) -> str:
    """``sha256:<hex>`` of the tree alone (paths, types, modes, contents, link targets): what
    the release *is*, without what one host added (version, created). The same inputs to
    ``release build`` or ``release add`` give the same digest on any host."""
    entries = [f.model_dump(mode="json", exclude_none=True) for f in files]
    entries.sort(key=lambda e: str(e["path"]))
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def render_statement(sha: str, label: str, digest: str) -> bytes:
    """What a release signature made off-host covers: nothing a host adds (version, created),
    only what the release is. ``agentgw release sign`` prints it; ``ssh-keygen -Y verify``
    checks a signature against it."""
    return f"{STATEMENT_HEAD}\nsha {sha}\nlabel {label}\ncontent {digest}\n".encode()


def statement_of(manifest: Manifest) -> bytes:
    return render_statement(manifest.sha, manifest.label, content_digest(manifest.files))


def signing_payload(manifest: Manifest) -> bytes:
    return SIGNING_CONTEXT + canonical_manifest(manifest)


def render_signature(signature: ManifestSignature) -> str:
    return json.dumps(signature.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


# verification ----------------------------------------------------------------------------------


def check_downgrade(candidate: Manifest, current: Manifest | None, allow_downgrade: bool) -> None:
    """Refuse to go back to an older version than the profile runs, unless asked explicitly."""
    if current is None or allow_downgrade or candidate.version >= current.version:
        return
    raise usage(
        f"{candidate.name} is version {candidate.version}, older than the current "
        f"{current.name} (version {current.version})",
        hint="pass --allow-downgrade to go back on purpose",
    )


# gc --------------------------------------------------------------------------------------------


def plan_gc(
    releases: Sequence[tuple[str, int | None]], in_use: Collection[str], keep: int
) -> list[str]:
    """Releases to remove, oldest first: all but the ``keep`` newest, never one in use.

    A release whose manifest is unreadable counts as the oldest.
    """
    newest = sorted(releases, key=lambda r: (r[1] or 0, r[0]), reverse=True)
    return [name for name, _ in reversed(newest[keep:]) if name not in in_use]
