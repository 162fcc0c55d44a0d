"""Files the registry serves besides the status snapshot: releases, proof records, sandbox.

Read-only: every function opens files for reading and nothing else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from agentgw.fsio import parse_iso, read_json, read_manifest_head
from agentgw.logroll import rotated
from agentgw.model.release import ProfileUse, Slot
from agentgw.paths import Layout
from agentgw.registry.auth import Refused
from agentgw.registry.documents import ReleaseEntry, SandboxReport

EXEC_TAIL = 20
TAIL_BYTES = 256 * 1024


def _uses(layout: Layout, profiles: Iterable[str]) -> dict[str, list[ProfileUse]]:
    """Release directory name -> the profiles whose current/previous point at it."""
    uses: dict[str, list[ProfileUse]] = {}
    for profile in profiles:
        slots: tuple[tuple[Slot, Path], ...] = (
            ("current", layout.current(profile)),
            ("previous", layout.previous(profile)),
        )
        for slot, link in slots:
            if link.is_symlink():
                name = Path(os.path.realpath(link)).name
                uses.setdefault(name, []).append(ProfileUse(profile=profile, slot=slot))
    return uses


def read_releases(layout: Layout, profiles: Iterable[str]) -> list[ReleaseEntry]:
    """Every release directory in name order, with its manifest head and the profiles using it."""
    try:
        entries = sorted(p for p in layout.releases.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise Refused(503, f"cannot list {layout.releases}: {exc.strerror}",
                      hint="the registry runs as root with CAP_DAC_READ_SEARCH") from exc
    uses = _uses(layout, profiles)
    out = []
    for path in entries:
        head = read_manifest_head(path)
        signed = (path / "manifest.sig").is_file()
        used = tuple(uses.get(path.name, ()))
        if isinstance(head, str):
            out.append(ReleaseEntry(name=path.name, signed=signed, used_by=used, problem=head))
            continue
        strings = {k: v if isinstance(v, str) else None
                   for k, v in (("sha", head.sha), ("label", head.label),
                                ("created", head.created))}
        version = head.version if type(head.version) is int else None
        expected = f"{strings['sha']}-{strings['label']}"
        out.append(
            ReleaseEntry(
                name=path.name, version=version, signed=signed, used_by=used,
                problem=None if expected == path.name else f"manifest.json names {expected}",
                **strings,
            )
        )
    return out


def read_proof(layout: Layout, profile: str) -> bytes | None:
    """The proof record exactly as stored (its signature covers those bytes), or None."""
    path = layout.proofs / f"{profile}.json"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Refused(503, f"cannot read the proof record: {exc.strerror}") from exc


def tail_lines(path: Path, count: int, max_bytes: int = TAIL_BYTES) -> list[bytes]:
    """The last ``count`` complete lines of a file, reading at most ``max_bytes`` from its end."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # the first line was cut by the seek
    return [line for line in lines if line.strip()][-count:]


def recent_lines(log: Path, count: int) -> list[bytes]:
    """The last ``count`` lines of a rotated log: the live file's, then (just after a
    rotation) the newest rotated file's before them."""
    lines = tail_lines(log, count)
    if len(lines) < count:
        lines = tail_lines(rotated(log, 1), count - len(lines)) + lines
    return lines


def read_sandbox(layout: Layout, now: float) -> SandboxReport:
    """The sandbox broker's last self-test and newest exec records, as it wrote them."""
    found = read_json(layout.sandbox_selftest)
    problem = found.error
    selftest: dict[str, Any] | None = found.data if isinstance(found.data, dict) else None
    if found.data is not None and selftest is None:
        problem = "selftest.json is not a JSON object"
    execs: list[dict[str, Any]] = []
    try:
        for line in recent_lines(layout.sandbox_execs, EXEC_TAIL):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                execs.append(record)
    except OSError as exc:
        problem = f"execs.jsonl: {exc.strerror}"
    recorded = selftest.get("backend") if selftest else None
    backend: Literal["kvm", "gvisor", "tcg", "none", "unknown"] = (
        recorded if recorded in ("kvm", "gvisor", "tcg", "none") else "unknown"
    )
    tested = parse_iso(selftest.get("time")) if selftest else None
    pools = [r["pool"] for r in execs if isinstance(r.get("pool"), dict)]
    return SandboxReport(
        backend=backend,
        kvm=None if backend == "unknown" else backend == "kvm",
        boundary=None if backend == "unknown" else backend in ("kvm", "gvisor"),
        selftest=selftest,
        selftest_time=selftest.get("time") if selftest and tested is not None else None,
        selftest_age_s=max(0.0, now - tested) if tested is not None else None,
        recent_execs=tuple(execs),
        pool=pools[-1] if pools else None,
        problem=problem,
    )
