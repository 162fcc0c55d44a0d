"""What is on the host now, as a plain snapshot the planner compares against the config."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agentgw.errors import usage
from agentgw.model.profile import Profile
from agentgw.paths import Layout

TMP_SUFFIX = ".agentgw-tmp"


@dataclass(frozen=True)
class PathState:
    """Owner (names, or the number when no name maps), mode and, for files, the text."""

    kind: str  # "dir", "file", "symlink", "other"
    owner: str
    group: str
    mode: int
    content: str | None = None


@dataclass(frozen=True)
class UnitState:
    active: str  # ActiveState, or "" when systemd does not know the unit
    enabled: str  # UnitFileState, or ""


@dataclass(frozen=True)
class HostState:
    users: frozenset[str]
    groups: frozenset[str]
    paths: Mapping[Path, PathState]
    leftovers: tuple[Path, ...]  # temp files of a killed write
    profiles_on_host: frozenset[str]  # profile dirs or drop-ins present
    units: Mapping[str, UnitState] = field(default_factory=dict)
    which: Mapping[str, Path | None] = field(default_factory=dict)


def _name(lookup: object, number: int) -> str:
    try:
        if lookup is pwd:
            return pwd.getpwuid(number).pw_name
        return grp.getgrgid(number).gr_name
    except KeyError:
        return str(number)


def path_state(path: Path, *, read: bool) -> PathState | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    else:
        kind = "other"
    content = None
    if read and kind == "file":
        content = path.read_text(errors="surrogateescape")
    return PathState(
        kind=kind,
        owner=_name(pwd, st.st_uid),
        group=_name(grp, st.st_gid),
        mode=stat.S_IMODE(st.st_mode),
        content=content,
    )


def observe_host(
    layout: Layout,
    *,
    dirs: Iterable[Path],
    files: Iterable[Path],
    tools: Iterable[str],
) -> HostState:
    """Stat the managed dirs, read the managed files, list users, groups and profile dirs."""
    paths: dict[Path, PathState] = {}
    for d in dirs:
        state = path_state(d, read=False)
        if state is not None:
            paths[d] = state
    scan_dirs = set()
    for f in files:
        state = path_state(f, read=True)
        if state is not None:
            paths[f] = state
        scan_dirs.add(f.parent)
    leftovers = tuple(sorted(p for d in scan_dirs if d.is_dir() for p in d.glob(f"*{TMP_SUFFIX}")))
    on_host: set[str] = set()
    gateways = layout.opt / "gateways"
    if gateways.is_dir():
        on_host |= {p.name for p in gateways.iterdir() if p.is_dir() and not p.is_symlink()}
    if layout.unit_dir.is_dir():
        prefix, suffix = "agent-gateway@", ".service.d"
        on_host |= {
            p.name[len(prefix) : -len(suffix)] for p in layout.unit_dir.glob(f"{prefix}*{suffix}")
        }
    which = {t: _which(t) for t in tools}
    return HostState(
        users=frozenset(u.pw_name for u in pwd.getpwall()),
        groups=frozenset(g.gr_name for g in grp.getgrall()),
        paths=paths,
        leftovers=leftovers,
        profiles_on_host=frozenset(on_host),
        which=which,
    )


def _which(tool: str) -> Path | None:
    if tool.startswith("/"):
        return Path(tool)
    found = shutil.which(tool, path=os.defpath + ":/usr/local/bin:/usr/sbin:/sbin")
    return Path(found).resolve() if found else None


CPU_SOURCES = (Path("/sys/fs/cgroup/cpuset.cpus.effective"), Path("/sys/devices/system/cpu/online"))


def host_cpus(sources: tuple[Path, ...] = CPU_SOURCES) -> frozenset[int]:
    """The CPUs a unit may be pinned to here (what CPUAffinity= can name): the cgroup's
    effective cpuset, else the online CPUs. Not this process's own affinity: run from a session
    the operator keeps off some CPUs, agentgw may still give those to a profile."""
    for source in sources:
        try:
            cpus = parse_cpu_list(source.read_text())
        except (OSError, ValueError):
            continue
        if cpus:
            return cpus
    return frozenset(os.sched_getaffinity(0))


def parse_cpu_list(text: str) -> frozenset[int]:
    """The kernel's CPU list format: "0-3,5" -> {0, 1, 2, 3, 5}; "" -> empty."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def check_cpus(profiles: Mapping[str, Profile], available: frozenset[int]) -> None:
    """Refuse (exit 2) a ``resources.cpus`` naming a CPU this host does not have: systemd
    would accept the drop-in and then fail every start of the unit."""
    for name, profile in profiles.items():
        missing = sorted(set(profile.resources.cpus or ()) - available)
        if missing:
            have = ", ".join(map(str, sorted(available)))
            raise usage(
                f"gateways/{name}.yaml: resources.cpus: CPU {', '.join(map(str, missing))} "
                "is not on this host",
                hint=f"this host has CPUs {have}",
            )
