"""Per-profile status, computed live: unit state, release, alignment, isolation, last promote.

Readers (``read_*``) touch the host and return plain data or a :class:`Read` carrying the
problem; judges (``judge_*``, :func:`status_of`) are pure and decide from that data alone, so
tests fabricate /proc-like inputs instead of processes. :func:`collect_status` joins them: one
ListUnitsByPatterns plus plain property reads on the caller's bus connection, then files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agentgw.bus import ServiceStatus, StartFacts, Systemd
from agentgw.config.load import Config
from agentgw.errors import AgentgwError
from agentgw.fsio import (
    MANIFEST_FILE,
    Read,
    Unreadable,
    clean,
    iso,
    read_json,
    read_manifest_head,
    read_untrusted,
    why,
)
from agentgw.model.profile import Profile
from agentgw.model.status import (
    Alignment,
    ProfileStatus,
    PromoteInfo,
    ReleaseInfo,
    StartFailure,
)
from agentgw.observe.isolation import judge_isolation
from agentgw.observe.promotes import read_promotes
from agentgw.observe.startup import READY_RECORD, ReadyRecord, judge_start, want_failure
from agentgw.observe.units import systemd_here
from agentgw.paths import Layout, unit_name

PROC = Path("/proc")
# A process's environment (the kernel caps it near 2 MiB with the arguments).
ENVIRON_CAP = 4 * 1024 * 1024
# Proof records are root's, with evidence: larger than a launch record.
PROOF_CAP = 8 * 1024 * 1024
REASON_LIMIT = 400
UNIT_PATTERN = "agent-gateway@*.service"
LAUNCH_RECORD = "launch.json"


class UnitReader(Protocol):
    """The part of :class:`agentgw.bus.Systemd` status needs (tests pass a fake)."""

    def service_statuses(self, patterns: list[str]) -> list[ServiceStatus]: ...
    def start_facts(self, name: str) -> StartFacts: ...


# --- pure -------------------------------------------------------------------------------------


def parse_environ(raw: bytes) -> dict[str, str]:
    """``/proc/<pid>/environ``: NUL-separated ``KEY=VALUE``; entries without '=' are dropped."""
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[key.decode(errors="surrogateescape")] = value.decode(errors="surrogateescape")
    return env


def absent_unit(name: str) -> ServiceStatus:
    """A configured instance systemd has not loaded: it was never started or was collected."""
    return ServiceStatus(
        name=name, load_state="not-loaded", active_state="inactive", sub_state="dead",
        main_pid=0, started_usec=0, n_restarts=0, memory_bytes=None, invocation_id="",
    )


def judge_alignment(
    *,
    current: str,
    unit: ServiceStatus | None,
    unit_problem: str,
    release: ReleaseInfo | None,
    environ: Read,
    launch: Read,
) -> Alignment:
    """:func:`_judge_alignment`, its reason made safe to print: it quotes the process's
    environment and the launch record, which the profile's user controls."""
    verdict = _judge_alignment(current=current, unit=unit, unit_problem=unit_problem,
                               release=release, environ=environ, launch=launch)
    return Alignment(state=verdict.state, reason=clean(verdict.reason, REASON_LIMIT))


def _judge_alignment(
    *,
    current: str,
    unit: ServiceStatus | None,
    unit_problem: str,
    release: ReleaseInfo | None,
    environ: Read,
    launch: Read,
) -> Alignment:
    """Whether the unit's main process imports exactly the promoted release.

    ``yes`` needs all of: one PYTHONPATH entry equal to ``current`` in the process's own
    environment; ``current`` resolving to a release with a manifest; and the launcher's record
    naming this pid, the release ``current`` resolves to now, and the manifest's sha. ``unknown``
    means it cannot be decided (no systemd, not running, nothing promoted, unreadable /proc);
    ``no`` means the evidence contradicts alignment.
    """
    if unit is None:
        return Alignment(state="unknown", reason=unit_problem)
    pid = unit.main_pid
    if release is None:
        if pid:
            return Alignment(state="no", reason=f"pid {pid} runs, but no release is promoted "
                             "(current is missing)")
        return Alignment(state="unknown", reason="no release promoted")
    if not pid:
        return Alignment(
            state="unknown", reason=f"not running ({unit.active_state}/{unit.sub_state})"
        )
    if release.problem:
        return Alignment(state="no", reason=f"current -> {release.path}: {release.problem}")
    return _judge_pythonpath(pid, current, environ) or _judge_launch(pid, current, release, launch)


def _judge_pythonpath(pid: int, current: str, environ: Read) -> Alignment | None:
    """What the process's own PYTHONPATH says against alignment, None if it agrees."""
    if environ.error or environ.data is None:
        problem = environ.error or "the process exited"
        return Alignment(
            state="unknown", reason=f"cannot read the environment of pid {pid}: {problem}"
        )
    pythonpath = environ.data.get("PYTHONPATH")
    if pythonpath is None:
        return Alignment(state="no", reason=f"pid {pid} has no PYTHONPATH")
    entries = pythonpath.split(":")
    if len(entries) != 1:
        return Alignment(
            state="no", reason=f"pid {pid} has {len(entries)} PYTHONPATH entries: {pythonpath}"
        )
    if entries[0] != current:
        return Alignment(state="no", reason=f"pid {pid} PYTHONPATH is {entries[0]}, not {current}")
    return None


def _judge_launch(pid: int, current: str, release: ReleaseInfo, launch: Read) -> Alignment:
    """The launcher's record against the pid and the release ``current`` resolves to now."""
    if launch.error:
        return Alignment(state="unknown", reason=f"cannot read the launch record: {launch.error}")
    record = launch.data
    if not isinstance(record, dict):
        return Alignment(state="no", reason=f"no launch record for pid {pid}")
    if record.get("pid") != pid:
        return Alignment(
            state="no",
            reason=f"the launch record is of pid {record.get('pid')}, not MainPID {pid}",
        )
    if record.get("runtime") != release.path:
        return Alignment(
            state="no",
            reason=f"pid {pid} started on {record.get('runtime')}; current now points at "
            f"{release.path} (restart to load it)",
        )
    if record.get("sha") != release.sha:
        return Alignment(
            state="no",
            reason=f"pid {pid} launched sha {record.get('sha')}, the manifest says {release.sha}",
        )
    return Alignment(
        state="yes", reason=f"pid {pid} imports {current} -> {release.name} (sha {release.sha})"
    )


@dataclass(frozen=True)
class Observed:
    """Everything read about one profile, the input of :func:`status_of`."""

    profile: str
    current: str
    unit: ServiceStatus | None
    unit_problem: str
    release: ReleaseInfo | None
    previous: ReleaseInfo | None
    environ: Read
    launch: Read
    proof: Read
    promote: PromoteInfo | None
    isolated_mode: bool
    start_failure: StartFailure | None = None


def status_of(seen: Observed, now: float) -> ProfileStatus:
    """The status record of one profile from everything read about it."""
    profile, unit, release = seen.profile, seen.unit, seen.release
    pid = unit.main_pid if unit is not None else 0
    started = unit.started_usec / 1e6 if unit is not None and unit.started_usec and pid else None
    return ProfileStatus(
        profile=profile,
        unit=unit_name(profile),
        load_state=unit.load_state if unit else "unknown",
        active_state=unit.active_state if unit else "unknown",
        sub_state=unit.sub_state if unit else "unknown",
        main_pid=pid or None,
        started_at=iso(started) if started is not None else None,
        uptime_s=max(0.0, now - started) if started is not None else None,
        restarts=unit.n_restarts if unit and unit.load_state != "not-loaded" else None,
        memory_bytes=unit.memory_bytes if unit else None,
        release=release,
        previous=seen.previous,
        aligned=judge_alignment(
            current=seen.current, unit=unit, unit_problem=seen.unit_problem, release=release,
            environ=seen.environ, launch=seen.launch,
        ),
        isolation=judge_isolation(
            isolated_mode=seen.isolated_mode, profile=profile, proof=seen.proof,
            started=started, now=now,
        ),
        last_promote=seen.promote,
        start_failure=seen.start_failure,
    )


# --- reading the host ---------------------------------------------------------------------------


def read_environ(pid: int, proc: Path = PROC) -> Read:
    try:
        return Read(data=parse_environ(read_untrusted(proc / str(pid) / "environ", ENVIRON_CAP)))
    except (FileNotFoundError, ProcessLookupError):
        return Read()
    except Unreadable as exc:
        return Read(error=str(exc))
    except OSError as exc:
        hint = " (reading another user's environment needs root with CAP_SYS_PTRACE)"
        return Read(error=why(exc) + (hint if isinstance(exc, PermissionError) else ""))


def read_release(link: Path, releases: Path) -> ReleaseInfo | None:
    """Where a ``current``/``previous`` symlink leads; None when there is no symlink."""
    if not link.is_symlink():
        if link.exists():
            return ReleaseInfo(name=link.name, path=os.fspath(link), problem="not a symlink")
        return None
    target = Path(os.path.realpath(link))
    info: dict[str, Any] = {"name": target.name, "path": os.fspath(target)}
    if not target.is_dir():
        return ReleaseInfo(**info, problem="dangling: the target is not a directory")
    # realpath(releases) only when needed: it costs a syscall per path component.
    if target.parent != releases and target.parent != Path(os.path.realpath(releases)):
        return ReleaseInfo(**info, problem=f"not a release under {releases}")
    head = read_manifest_head(target)
    if isinstance(head, str):
        return ReleaseInfo(**info, problem=head)
    sha, label, version = head.sha, head.label, head.version
    if not isinstance(sha, str) or not isinstance(label, str):
        return ReleaseInfo(**info, problem=f"{MANIFEST_FILE} has no sha and label")
    version = version if isinstance(version, int) and not isinstance(version, bool) else None
    problem = None if f"{sha}-{label}" == target.name else f"{MANIFEST_FILE} names {sha}-{label}"
    return ReleaseInfo(**info, sha=sha, label=label, version=version, problem=problem)


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def status_inputs(layout: Layout, etc: Path, profiles: Iterable[str]) -> tuple[object, ...]:
    """The identity (inode, size, mtime, ctime, by lstat) of every file a status is read from.

    Equal tuples mean :func:`collect_status` would read the same files: the config (a profile
    added or removed changes its directory), the history log, each profile's ``current`` and
    ``previous`` symlinks (a flip replaces them), its launch record and its proof record.
    Release manifests are immutable, and what only systemd knows is watched by
    :class:`agentgw.bus.watch.UnitWatch`. About 5 ``lstat`` calls per profile.
    """
    paths = [etc / "agentgw.yaml", etc / "gateways", layout.history]
    for profile in profiles:
        paths += [
            etc / "gateways" / f"{profile}.yaml",
            layout.current(profile),
            layout.previous(profile),
            layout.logs(profile) / LAUNCH_RECORD,
            layout.proofs / f"{profile}.json",
        ]
    return tuple(_identity(path) for path in paths)


def read_units(sd: UnitReader | None) -> tuple[dict[str, ServiceStatus] | None, str]:
    """Every loaded gateway instance by unit name, or None and why systemd could not say."""
    if sd is None:
        return None, "systemd is not available here"
    try:
        return {u.name: u for u in sd.service_statuses([UNIT_PATTERN])}, ""
    except AgentgwError as exc:
        return None, exc.message


def collect_status(
    layout: Layout,
    config: Config,
    sd: UnitReader | None,
    *,
    now: float | None = None,
    proc: Path = PROC,
) -> list[ProfileStatus]:
    """The status of every configured profile, in name order.

    With ``sd=None`` (no systemd) the unit columns say "unknown" and alignment cannot be decided.
    """
    at = time.time() if now is None else now
    units, problem = read_units(sd)
    promotes = read_promotes(layout.history)
    out = []
    for profile in config.profiles:
        name = unit_name(profile)
        unit = None if units is None else units.get(name) or absent_unit(name)
        running = unit is not None and unit.main_pid > 0
        out.append(
            status_of(Observed(
                profile=profile,
                current=os.fspath(layout.current(profile)),
                unit=unit,
                unit_problem=problem,
                release=read_release(layout.current(profile), layout.releases),
                previous=read_release(layout.previous(profile), layout.releases),
                environ=read_environ(unit.main_pid, proc) if unit and running else Read(),
                launch=read_json(layout.logs(profile) / LAUNCH_RECORD) if running else Read(),
                proof=read_json(layout.proofs / f"{profile}.json", PROOF_CAP),
                promote=promotes.get(profile),
                isolated_mode=config.host.isolated,
                start_failure=read_start_failure(sd, config.profiles[profile], unit, layout),
            ), at)
        )
    return out


def read_start_failure(
    sd: UnitReader | None, profile: Profile, unit: ServiceStatus | None, layout: Layout
) -> StartFailure | None:
    """Why the unit is down after a failed start (None while it runs or was stopped)."""
    if sd is None or unit is None:
        return None
    if unit.active_state != "failed" and unit.sub_state != "auto-restart":
        return None
    try:
        facts = sd.start_facts(unit.name)
    except AgentgwError:
        return None
    if not want_failure(facts):
        return None
    ready = ReadyRecord.parse(read_json(layout.logs(profile.name) / READY_RECORD).data)
    return judge_start(profile, facts, ready)


class _Unreachable:
    """A unit reader that reports why the bus could not be opened."""

    def __init__(self, error: AgentgwError) -> None:
        self.error = error

    def service_statuses(self, patterns: list[str]) -> list[ServiceStatus]:
        raise self.error

    def start_facts(self, name: str) -> StartFacts:
        raise self.error


def status_now(layout: Layout, config: Config) -> list[ProfileStatus]:
    """:func:`collect_status` over a fresh system-bus connection when systemd manages ``layout``.

    Under a relocated root, or where systemd is not PID 1 or the bus is unreachable, the unit
    columns say "unknown" (with the reason) instead of failing.
    """
    if layout.root != Path("/") or not systemd_here():
        return collect_status(layout, config, None)
    try:
        sd = Systemd().open()
    except AgentgwError as exc:
        return collect_status(layout, config, _Unreachable(exc))
    try:
        return collect_status(layout, config, sd)
    finally:
        sd.close()
