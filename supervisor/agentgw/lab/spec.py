"""What a lab is: its name, what to boot (``LabSpec``), what a booted one recorded (``LabState``),
and whether this machine can boot one."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from agentgw.errors import AgentgwError, usage
from agentgw.lab import link

DEFAULT_BASE = Path("/run/agentgw-lab")


DEFAULT_NAME = "agentgw-lab"


NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


IN_LAB_ENV = "AGENTGW_IN_LAB"


CGROUP_MODES = ("unified", "hybrid")


def why_unavailable() -> str | None:
    """Why this machine cannot boot a lab, or None when it can."""
    if os.environ.get(IN_LAB_ENV) == "1":
        return "already inside a lab (nested labs are not supported)"
    if os.geteuid() != 0:
        return "the lab needs root (systemd-nspawn and overlay mounts)"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn not found (apt-get install systemd-container)"
    if shutil.which("nsenter") is None:
        return "nsenter not found (util-linux)"
    return None


def check_available() -> None:
    reason = why_unavailable()
    if reason is not None:
        raise AgentgwError(
            f"cannot boot a lab here: {reason}", hint="run as root on Debian 12 (make setup)"
        )


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise usage(
            f"lab name {name!r} is invalid",
            hint="use 1-31 characters: a lowercase letter, then lowercase letters, digits or '-'",
        )
    return name


@dataclass(frozen=True)
class LabSpec:
    """What to boot. ``bpf`` allows the bpf() syscall so IPAddressDeny= is enforced (LAB.md).

    ``cgroups``: ``unified`` (cgroup v2 only: the IP firewall works; on a host that keeps the
    resource controllers on v1, CPUQuota=/MemoryMax=/TasksMax= do not) or ``hybrid`` (cgroup2
    plus the host's v1 cpu, cpuacct, memory and pids, delegated read-write: all of them work;
    see :mod:`agentgw.lab.cgroups`).
    """

    name: str = DEFAULT_NAME
    binds: tuple[Path, ...] = ()
    base: Path = DEFAULT_BASE
    bpf: bool = True
    kvm: bool = True
    private_network: bool = True
    boot_timeout: float = 90.0
    cgroups: str = "unified"
    # A veth link into the caller's network namespace and an sshd on it (agentgw.lab.link).
    link: link.LinkSpec | None = None


@dataclass
class LabState:
    name: str
    dir: str
    nspawn_pid: int = 0
    nspawn_started: float = 0.0
    leader_pid: int = 0
    bpf: bool = True
    binds: list[str] = field(default_factory=list)
    boot_seconds: float = 0.0
    cgroups: str = "unified"
    # The lab's own cgroups on the host (removed at teardown).
    groups: list[str] = field(default_factory=list)
    # With a link: the caller's namespace, the lab's address on it and its sshd host key.
    link_netns: str = ""
    address: str = ""
    host_key: str = ""
