"""Fabricated hosts for status tests: a temp layout with releases, links, /proc and records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import MappingProxyType
from typing import NotRequired, TypedDict, Unpack

from agentgw.bus import ServiceStatus, StartFacts
from agentgw.config.load import Config
from agentgw.model import HostConfig, Profile
from agentgw.paths import Layout, unit_name


def config(
    tmp_path: Path, names: tuple[str, ...] = ("api", "core", "mcp"), **host: object
) -> Config:
    profiles = {
        name: Profile.model_validate(
            {"name": name, "mode": "cli", "listen": f"127.77.0.{i + 2}:8080"}
        )
        for i, name in enumerate(names)
    }
    return Config(
        etc=tmp_path / "etc",
        host=HostConfig.model_validate(host),
        host_file=None,
        profiles=MappingProxyType(dict(sorted(profiles.items()))),
        profile_files=MappingProxyType({n: tmp_path / f"{n}.yaml" for n in profiles}),
    )


def add_release(layout: Layout, sha: str, label: str, version: int = 1) -> Path:
    path = layout.release(sha, label)
    path.mkdir(parents=True)
    manifest = {"format": 1, "sha": sha, "label": label, "version": version,
                "created": "2024-01-01T00:00:00Z", "files": []}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def link(layout: Layout, profile: str, slot: str, target: Path) -> None:
    where = layout.profile_dir(profile) / slot
    where.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, where.parent), where)


class Launched(TypedDict):
    """The launch of :func:`run_process`: the sha it records, and the PYTHONPATH the process
    has (default: the profile's current)."""

    sha: str
    pythonpath: NotRequired[str | None]


def run_process(
    layout: Layout, proc: Path, profile: str, pid: int, release: Path,
    **launch: Unpack[Launched],
) -> None:
    """What a launched gateway leaves: /proc/<pid>/environ and the launcher's launch.json."""
    sha, pythonpath = launch["sha"], launch.get("pythonpath")
    current = os.fspath(layout.current(profile))
    (proc / str(pid)).mkdir(parents=True)
    path = pythonpath if pythonpath is not None else current
    env = f"PYTHONPATH={path}\0AGENT_PROFILE={profile}\0"
    (proc / str(pid) / "environ").write_bytes(env.encode())
    logs = layout.logs(profile)
    logs.mkdir(parents=True, exist_ok=True)
    record = {"profile": profile, "pid": pid, "cwd": "/", "PYTHONPATH": current,
              "runtime": os.fspath(release), "sha": sha, "mode": "cli", "exec": ["python"]}
    (logs / "launch.json").write_text(json.dumps(record))


def service(profile: str, pid: int, *, started: float = 1_700_000_000.0,
            active: str = "active", sub: str = "running") -> ServiceStatus:
    return ServiceStatus(
        name=unit_name(profile), load_state="loaded", active_state=active, sub_state=sub,
        main_pid=pid, started_usec=int(started * 1e6) if pid else 0, n_restarts=2,
        memory_bytes=50 * 1024 * 1024, invocation_id="00",
    )


class Ended(TypedDict, total=False):
    """How a fabricated start ended (:func:`facts`); every key has a failed exit's default."""

    active: str
    sub: str
    result: str
    code: str
    status: int
    started: float
    status_text: str


def facts(**ended: Unpack[Ended]) -> StartFacts:
    started = ended.get("started", 1_700_000_000.0)
    return StartFacts(
        active_state=ended.get("active", "failed"), sub_state=ended.get("sub", "failed"),
        result=ended.get("result", "exit-code"), main_code=ended.get("code", "exited"),
        main_status=ended.get("status", 1), main_pid=0,
        status_text=ended.get("status_text", ""), main_start_usec=int(started * 1e6),
        main_exit_usec=int(started * 1e6) + 1000, n_restarts=0,
    )


class FakeSystemd:
    """Answers ListUnitsByPatterns-style reads from a fixed list and counts the calls;
    ``start_facts`` from a dict by unit name (a failed exit by default)."""

    def __init__(
        self, units: list[ServiceStatus], start: dict[str, StartFacts] | None = None
    ) -> None:
        self.units = units
        self.start = start or {}
        self.calls: list[list[str]] = []

    def start_facts(self, name: str) -> StartFacts:
        return self.start.get(name, facts())

    def service_statuses(self, patterns: list[str]) -> list[ServiceStatus]:
        self.calls.append(list(patterns))
        return list(self.units)
