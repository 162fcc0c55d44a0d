"""What ``agentgw status`` and the registry report per profile: one frozen record each.

The record is computed live (unit state over D-Bus, the process's environment, the release
symlinks, the proof record, the history log) and never stored. ``cells`` renders it for the
table the CLI prints and the registry's HTML page shows, so both read the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from agentgw.machine import SCHEMA_VERSION, identity
from agentgw.model.fields import Frozen

AlignedState = Literal["yes", "no", "unknown"]
IsolationState = Literal["isolated", "not isolated", "not enforced", "unproven", "stale"]

COLUMNS = (
    "profile",
    "state",
    "pid",
    "uptime",
    "restarts",
    "memory",
    "release",
    "aligned",
    "isolation",
    "last promote",
)


@dataclass(frozen=True)
class HealthAnswer:
    """A profile's health check: answered 200 (``ok``) or why not, and the sha it reported."""

    ok: bool
    reason: str
    sha: str | None = None


class ReleaseInfo(Frozen):
    """Where a profile's ``current`` or ``previous`` symlink leads, and that release's manifest."""

    name: str = Field(description="the release directory name, <sha>-<label>")
    path: str = Field(description="the symlink's target, fully resolved")
    sha: str | None = Field(default=None, description="manifest.json sha")
    label: str | None = Field(default=None, description="manifest.json label")
    version: int | None = Field(default=None, description="manifest.json version")
    problem: str | None = Field(
        default=None, description="why the target is not a usable release, or null"
    )


class Alignment(Frozen):
    """Whether the running process imports exactly the promoted release, and why (not)."""

    state: AlignedState
    reason: str


class Isolation(Frozen):
    """The last isolation proof of the profile, judged against the running unit."""

    state: IsolationState
    reason: str
    proof_time: str | None = Field(default=None, description="ISO UTC time of the proof")
    proof_age_s: float | None = Field(default=None, description="seconds since the proof")


class PromoteInfo(Frozen):
    """The last promote or rollback of the profile in the history log."""

    time: str
    action: str = Field(description="promote or rollback")
    result: str = Field(description="ok, rolled_back, failed, ...")
    release: str | None = Field(default=None, description="the release it moved to")
    reason: str | None = Field(default=None, description="why it failed or rolled back")
    timestamp: float | None = Field(default=None, description="time as seconds since the epoch")


class StartFailure(Frozen):
    """Why the gateway's last start failed, in words a user can act on."""

    readiness: str = Field(description="what the start waited for: health or notify")
    cause: str = Field(description="what was (not) seen, e.g. no READY=1 within 90s")
    fix: str = Field(description="what to change or look at")
    log: tuple[str, ...] = Field(
        default=(), description="the unit's last journal lines (promote and history only)"
    )

    def render(self) -> str:
        return f"{self.cause}; fix: {self.fix}"


class ProfileStatus(Frozen):
    """One profile as it runs now."""

    profile: str
    unit: str
    load_state: str = Field(description="systemd LoadState, 'unknown' without systemd")
    active_state: str = Field(description="systemd ActiveState, 'unknown' without systemd")
    sub_state: str = Field(description="systemd SubState, 'unknown' without systemd")
    main_pid: int | None = Field(default=None, description="MainPID, null when not running")
    started_at: str | None = Field(default=None, description="ISO UTC ExecMainStartTimestamp")
    uptime_s: float | None = None
    restarts: int | None = Field(default=None, description="NRestarts")
    memory_bytes: int | None = Field(default=None, description="MemoryCurrent")
    release: ReleaseInfo | None = Field(default=None, description="where current points")
    previous: ReleaseInfo | None = Field(default=None, description="where previous points")
    aligned: Alignment
    isolation: Isolation
    last_promote: PromoteInfo | None = None
    start_failure: StartFailure | None = Field(
        default=None, description="why the last start failed, while the unit is not running"
    )

    @property
    def up(self) -> bool:
        return self.active_state in ("active", "reloading")

    def cells(self) -> dict[str, str]:
        """The table row: one short text per :data:`COLUMNS` entry."""
        promote = self.last_promote
        return {
            "profile": self.profile,
            "state": f"{self.active_state}/{self.sub_state}",
            "pid": str(self.main_pid) if self.main_pid else "-",
            "uptime": human_duration(self.uptime_s),
            "restarts": "-" if self.restarts is None else str(self.restarts),
            "memory": human_bytes(self.memory_bytes),
            "release": self.release.name if self.release else "-",
            "aligned": self.aligned.state,
            "isolation": self.isolation.state
            + (f" ({human_duration(self.isolation.proof_age_s)} ago)"
               if self.isolation.proof_age_s is not None else ""),
            "last promote": f"{promote.time} {promote.action} {promote.result}" if promote else "-",
        }


class ProfileList(Frozen):
    """``agentgw status --json`` and the registry's ``/v1/profiles``."""

    generated_at: str = Field(description="ISO UTC time the snapshot was taken")
    isolation_mode: Literal["production", "convenience"]
    profiles: tuple[ProfileStatus, ...]
    source: Literal["registry", "direct"] | None = Field(
        default=None,
        description="registry: served by the running registry; direct: computed by agentgw "
        "status itself (no registry, or --etc/--root given)",
    )
    schema_version: int = Field(default=SCHEMA_VERSION, description="of this document")
    machine: dict[str, str] = Field(
        default_factory=identity, description="machine_id and hostname of the host"
    )


def human_duration(seconds: float | None) -> str:
    """``45s``, ``12m03s``, ``5h07m``, ``3d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def human_bytes(count: int | None) -> str:
    """``512B``, ``1.5K``, ``230.0M`` (binary units, as systemctl prints); ``-`` when unknown."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{count}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"
