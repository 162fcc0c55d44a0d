"""What this host can enforce, measured: kernel, systemd, cgroup mode, BPF firewall, hidepid.

systemd accepts ``IPAddressDeny=`` without a cgroup-v2 BPF firewall (or with ``bpf()`` blocked
by a container's seccomp filter) and ``ProtectProc=`` without hidepid support, and then
silently does not enforce them. So the two facts that matter are decided by behaviour: one
transient unit with ``IPAddressDeny=any`` and ``ProtectProc=invisible``, running as ``nobody``,
tries to reach a loopback listener of ours and to see PID 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from agentgw.machine import identity
from agentgw.model.proof import Capability, CgroupMode, HostFacts
from agentgw.proofs.checks import reached
from agentgw.proofs.probes import CONNECT_TIMEOUT_S, Bus, Listeners, run_probe

MOUNTS = Path("/proc/self/mounts")
CGROUP_ROOT = "/sys/fs/cgroup"
PROBE_USER = "nobody"
HOST_PROBE_PROPERTIES: dict[str, object] = {
    "User": PROBE_USER,
    "IPAddressDeny": ["any"],
    "ProtectProc": "invisible",
    "ProtectSystem": "strict",
    "PrivateTmp": True,
    "NoNewPrivileges": True,
}


class VersionReader(Bus, Protocol):
    def version(self) -> str: ...


def cgroup_mode(mounts: str) -> CgroupMode:
    """unified: cgroup2 at /sys/fs/cgroup; hybrid: v1 there with cgroup2 below; else legacy."""
    types: dict[str, str] = {}
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            types[fields[1]] = fields[2]
    root = types.get(CGROUP_ROOT)
    if root == "cgroup2":
        return "unified"
    if root is None:
        return "unknown"
    if types.get(f"{CGROUP_ROOT}/unified") == "cgroup2":
        return "hybrid"
    return "legacy"


def judge_capabilities(
    answers: dict[str, Any] | None, udp_received: bool
) -> tuple[Capability, Capability]:
    """(bpf_firewall, protect_proc) from the host probe's answers."""
    if answers is None:
        return "unknown", "unknown"
    connects = [{**c, "udp_received": udp_received} for c in answers.get("connect", [])]
    bpf: Capability = "unknown"
    if connects:
        bpf = "not-enforced" if any(reached(c) for c in connects) else "enforced"
    procs = answers.get("processes", [])
    proc: Capability = "unknown"
    if procs and "visible" in procs[0]:
        proc = "not-enforced" if procs[0]["visible"] else "enforced"
    return bpf, proc


def probe_host(sd: VersionReader, net: Listeners, python: str, deny_host: str) -> HostFacts:
    """Host facts, with the BPF firewall and ProtectProc decided by one probe unit."""
    target = net.open("bpf-probe", deny_host, "deny")
    spec = {
        "connect": [target.spec()],
        "processes": [{"profile": "pid1", "pid": 1}],
        "timeout": CONNECT_TIMEOUT_S,
    }
    run = run_probe(sd, "host", python, spec, HOST_PROBE_PROPERTIES)
    received = net.received(target)
    bpf, proc = judge_capabilities(run.answers, received)
    try:
        mounts = MOUNTS.read_text()
    except OSError:
        mounts = ""
    evidence: dict[str, Any] = {
        "probe_unit": run.unit,
        "probe_properties": dict(HOST_PROBE_PROPERTIES),
        "connect": [{**c, "udp_received": received} for c in (run.answers or {}).get("connect",
                                                                                     [])],
        "pid1": ((run.answers or {}).get("processes") or [None])[0],
    }
    if run.error is not None:
        evidence["error"] = run.error
    return HostFacts(
        kernel=os.uname().release,
        systemd=sd.version(),
        cgroup=cgroup_mode(mounts),
        bpf_firewall=bpf,
        protect_proc=proc,
        evidence=evidence,
        **identity(),
    )
