"""The JSON documents the registry answers with (besides :class:`ProfileStatus` itself).

Frozen models, so the OpenAPI schema is generated from the same classes that render responses.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from agentgw.model.fields import Frozen
from agentgw.model.release import ProfileUse


class Health(Frozen):
    status: Literal["ok"] = "ok"
    version: str
    unit_watch: bool = Field(
        default=False,
        description="systemd's unit signals are watched: a no-cache request (agentgw status) "
        "reuses a snapshot while nothing changed; false: every such request takes a new one",
    )


class ReleaseEntry(Frozen):
    """A directory under the releases dir, identified by its manifest."""

    name: str
    sha: str | None = None
    label: str | None = None
    version: int | None = None
    created: str | None = None
    signed: bool = Field(description="a manifest.sig is present (verify with agentgw release)")
    used_by: tuple[ProfileUse, ...] = ()
    problem: str | None = None


class ReleaseList(Frozen):
    releases: tuple[ReleaseEntry, ...]


class SandboxReport(Frozen):
    """The microVM sandbox as its broker last recorded it; nothing is guessed."""

    backend: Literal["kvm", "gvisor", "tcg", "none", "unknown"] = Field(
        description="the backend of the last self-test: kvm (microVM), gvisor (runsc), tcg "
        "(emulated microVM), none (no usable backend: jobs are refused) or unknown"
    )
    kvm: bool | None = Field(description="whether KVM is in use; null when unknown")
    boundary: bool | None = Field(
        default=None, description="whether the backend is a security boundary (kvm, gvisor); "
        "null when unknown"
    )
    selftest: dict[str, Any] | None = Field(description="the last self-test record as stored")
    selftest_time: str | None = None
    selftest_age_s: float | None = None
    recent_execs: tuple[dict[str, Any], ...] = Field(
        default=(), description="the newest exec records (of the caller's profiles)"
    )
    pool: dict[str, Any] | None = Field(
        default=None, description="the broker's pool of sandboxes prepared ahead (gVisor job "
        "units, or warm VMs) after the newest exec: size, ready, served_warm, served_cold, "
        "spares, spares_ready, served_spare (job units started with no sandbox), ...; "
        "null when no record carries it"
    )
    problem: str | None = None


class ErrorBody(Frozen):
    error: str
    hint: str = ""
    status: int
