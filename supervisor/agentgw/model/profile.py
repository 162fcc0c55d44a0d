"""A gateway profile: one ``gateways/<name>.yaml``, one systemd instance, one Linux user.

The field checks and types it shares with the host model are in :mod:`agentgw.model.fields`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from agentgw.model.fields import (
    AbsPath,
    CredentialName,
    DeniedTool,
    EnvKey,
    EnvValue,
    Frozen,
    HttpPath,
    JournalSize,
    Limit,
    Listen,
    Network,
    Percent,
    ReleasePath,
    Seconds,
    Size,
    invalid,
    size_bytes,
    want_profile_name,
)


class Resources(Frozen):
    """systemd resource limits of the gateway's unit."""

    memory_max: Size = Field(
        default="1G", description="MemoryMax=, a systemd size such as 512M or 2G"
    )
    cpu_quota: Percent = Field(
        default="100%", description="CPUQuota=, 1% to 10000% (100% = one CPU)"
    )
    tasks_max: StrictInt = Field(
        default=512,
        ge=1,
        le=100000,
        description="TasksMax=, processes and threads, 1 to 100000 (also LimitNPROC= when each "
        "profile has its own user)",
    )
    file_max: Limit | None = Field(
        default=None,
        description="LimitFSIZE=, the largest file the gateway may write (home, logs), e.g. "
        "256M; a cap per file, not on the directory's total; null for none",
    )
    data_max: Limit | None = Field(
        default=None,
        description="LimitDATA=, heap and private memory per process (thread stacks count), "
        "enforced even where the cgroup memory controller is not; null for none",
    )
    cpus: tuple[Annotated[StrictInt, Field(ge=0, le=4095)], ...] | None = Field(
        default=None,
        min_length=1,
        description="CPUAffinity=, the CPU numbers the gateway may run on, e.g. [1]; the "
        "kernel holds it (sched_setaffinity) with or without cgroup controllers, so a profile "
        "that burns CPU leaves the others' CPUs alone; null for all CPUs",
    )

    @property
    def memory_max_bytes(self) -> int | None:
        return size_bytes(self.memory_max)


class Logs(Frozen):
    """The profile's own journal (LogNamespace=): what it keeps and what its journald may use.

    A gateway's stdout and stderr go to a journald instance of its own, so a flood is read, rate
    limited and stored within this profile's budget, never by the journald every unit shares.
    """

    max_use: JournalSize = Field(
        default="256M",
        description="SystemMaxUse= of the profile's journal: the disk its logs may take, oldest "
        "dropped first, e.g. 256M",
    )
    rate_limit_burst: StrictInt = Field(
        default=10000,
        ge=0,
        le=10_000_000,
        description="RateLimitBurst=: lines kept per 30 s before journald drops them (0: no "
        "limit)",
    )
    cpu_quota: Percent = Field(
        default="25%",
        description="CPUQuota= of the profile's journald, which runs on the profile's cpus",
    )


class Health(Frozen):
    """The HTTP check run against ``listen`` after a start or promote."""

    path: HttpPath = Field(default="/health", description="the HTTP path of the health check")
    timeout_s: Seconds = Field(
        default=10.0, le=300, description="seconds to wait, above 0 and at most 300"
    )
    settle_s: Annotated[StrictFloat, Field(ge=0)] = Field(
        default=0.0,
        le=300,
        description="after the first healthy answer, seconds the new process must keep running "
        "(same MainPID, no restart) and still answer before the promote commits; 0 commits at "
        "once",
    )


class Profile(Frozen):
    """One gateway: how it runs, where it listens, and what it may reach and read."""

    name: str = Field(description="the profile name, from the file name")
    mode: Literal["cli", "script"] = Field(
        description="cli runs the runtime's gateway; script runs exec from the release"
    )
    listen: Listen = Field(description="the profile's own loopback address, e.g. 127.77.0.2:8080")
    exec: ReleasePath | None = Field(
        default=None, description="script mode: the script to run, relative to the release tree"
    )
    egress: tuple[Network, ...] = Field(
        default=(), description="IP networks the gateway may connect to, e.g. 203.0.113.0/24"
    )
    denied_tools: tuple[DeniedTool, ...] = Field(
        default=(), description="absolute paths or bare tool names the gateway must not find"
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="memory_max, cpu_quota, tasks_max, file_max, data_max, cpus",
    )
    logs: Logs = Field(
        default_factory=Logs,
        description="max_use, rate_limit_burst, cpu_quota of the profile's own journal",
    )
    health: Health = Field(
        default_factory=Health, description="path and timeout_s of the health check"
    )
    env: Mapping[EnvKey, EnvValue] = Field(
        default_factory=dict,
        description='NAME: text; quote numbers and booleans, e.g. LOG_LEVEL: "1"',
    )
    credentials: Mapping[CredentialName, AbsPath] = Field(
        default_factory=dict,
        description="name: absolute path of a secret, passed with LoadCredential=",
    )
    stop_timeout_s: Seconds = Field(
        default=30.0,
        le=3600,
        description="seconds to drain before the stop is forced, at most 3600",
    )
    memory_deny_write_execute: StrictBool = Field(
        default=True, description="true or false; false only for JIT runtimes (node, JVM)"
    )
    readiness: Literal["health", "notify"] = Field(
        default="health",
        description="when the unit counts as started: health (its health check answers 200; "
        "works for any runtime that serves HTTP) or notify (it sends READY=1 via sd_notify, from "
        "any of its processes)",
    )
    start_timeout_s: Seconds = Field(
        default=90.0,
        le=3600,
        description="TimeoutStartSec=: seconds the runtime has to become ready (READY=1, or its "
        "health check answering 200), at most 3600",
    )

    @model_validator(mode="after")
    def _check_mode(self) -> Profile:
        if not want_profile_name(self.name):
            raise invalid(
                f"{self.name!r} is not a valid profile name",
                "a lowercase letter, then up to 24 lowercase letters or digits",
                field="name",
            )
        if self.mode == "script" and self.exec is None:
            raise invalid(
                "script mode needs exec",
                "add exec: the script to run, relative to the release, "
                "e.g. agent_cli/mcp_server.py",
                field="mode",
            )
        if self.mode == "cli" and self.exec is not None:
            raise invalid(
                "exec is only used in script mode",
                "remove exec, or set mode: script",
                field="exec",
            )
        return self
