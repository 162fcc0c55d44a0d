"""A release tree on disk against its manifest (pure): what differs, and how to say it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agentgw.fsio import MANIFEST_FILE
from agentgw.model.release import (
    FileEntry,
    Manifest,
    Problem,
)
from agentgw.plan.release import (
    DIR_MODE,
    FILE_MODE,
    SIGNATURE_FILE,
    STATEMENT_SIG_FILE,
    render_mode,
)


@dataclass(frozen=True)
class ObservedEntry:
    """One path of a release tree on disk (``.`` is the release directory itself)."""

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str | None = None
    target: str | None = None


def same_tree(a: Iterable[FileEntry], b: Iterable[FileEntry]) -> bool:
    """Whether two manifests describe the same files (version and created aside)."""
    return sorted(a, key=lambda e: e.path) == sorted(b, key=lambda e: e.path)


def diff_tree(
    manifest: Manifest, observed: Sequence[ObservedEntry], owner: tuple[int, int]
) -> list[Problem]:
    """Every difference between a release on disk and its manifest, sorted by path.

    The release directory is 0555 and the manifest files 0444; everything belongs to ``owner``.
    """
    want: dict[str, tuple[str, int]] = {".": ("dir", DIR_MODE), MANIFEST_FILE: ("file", FILE_MODE)}
    want.update({e.path: (e.type, int(e.mode, 8)) for e in manifest.files})
    entries = {e.path: e for e in manifest.files}
    seen = {o.path for o in observed}
    for sig in (SIGNATURE_FILE, STATEMENT_SIG_FILE):
        if sig in seen:
            want[sig] = ("file", FILE_MODE)
    problems = [
        Problem(kind="missing", path=path, detail=f"{kind} listed in the manifest is missing")
        for path, (kind, _) in want.items()
        if path not in seen
    ]
    for have in observed:
        if have.path not in want:
            problems.append(Problem(kind="extra", path=have.path, detail="not in the manifest"))
            continue
        problems.extend(_diff_entry(have, *want[have.path], entries.get(have.path), owner))
    return sorted(problems, key=lambda p: (p.path, p.kind))


def render_problems(problems: Sequence[Problem], limit: int = 5) -> str:
    """Problems on one line (the error line of verify and promote), the first ``limit`` shown."""
    shown = "; ".join(str(p) for p in problems[:limit])
    return shown + (f" (and {len(problems) - limit} more)" if len(problems) > limit else "")


def _diff_entry(
    have: ObservedEntry,
    kind: str,
    mode: int,
    entry: FileEntry | None,
    owner: tuple[int, int],
) -> list[Problem]:
    if have.type != kind:
        return [Problem(kind="type", path=have.path, detail=f"is a {have.type}, not a {kind}")]
    problems = []
    if entry is not None and entry.type == "file" and have.sha256 != entry.sha256:
        problems.append(
            Problem(kind="changed", path=have.path, detail="content differs from the manifest")
        )
    if entry is not None and entry.type == "symlink" and have.target != entry.target:
        problems.append(
            Problem(
                kind="target",
                path=have.path,
                detail=f"points at {have.target!r}, the manifest says {entry.target!r}",
            )
        )
    if kind != "symlink" and have.mode != mode:
        problems.append(
            Problem(
                kind="mode",
                path=have.path,
                detail=f"mode {render_mode(have.mode)}, want {render_mode(mode)}",
            )
        )
    if (have.uid, have.gid) != owner:
        problems.append(
            Problem(
                kind="owner",
                path=have.path,
                detail=f"owned by {have.uid}:{have.gid}, want {owner[0]}:{owner[1]}",
            )
        )
    return problems
