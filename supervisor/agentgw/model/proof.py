"""The signed proof record ``agentgw verify`` writes per profile (``proofs/<profile>.json``).

One record holds every check run on the profile's *running* unit (name, result, evidence,
time), the host facts that decide whether a boundary can be enforced at all, the sandbox
property sets of the gateway and of the probe unit that ran as it, the exposure score, and an
Ed25519 signature over all of that (``agentgw attest verify`` checks it).

``observe/status.judge_isolation`` and the registry read these records; they rely on
``profile``, ``time``, ``isolated`` and each check's ``name`` and ``result``.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT: Final = "agentgw-proof/1"

CheckResult = Literal["passed", "failed", "not-enforced"]
Capability = Literal["enforced", "not-enforced", "unknown"]
CgroupMode = Literal["unified", "hybrid", "legacy", "unknown"]

# The checks of DESIGN.md's isolation section, in the order they are run and shown.
CHECK_NAMES = (
    "alignment",
    "unit-lint",
    "probe-sandbox",
    "cross-profile-read",
    "egress",
    "denied-tools",
    "read-only-system",
    "devices",
    "namespaces",
    "sibling-process",
    "lifecycle",
    "exposure",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Check(_Frozen):
    """One proof: what was tried, what was observed, and the verdict."""

    name: str = Field(description="one of CHECK_NAMES")
    result: CheckResult = Field(description="passed, failed, or not-enforced (host cannot)")
    reason: str = Field(description="one line a reviewer can act on")
    evidence: dict[str, Any] = Field(description="observed values: errno, paths, score, ...")
    time: str = Field(description="ISO UTC time the check was judged")


class HostFacts(_Frozen):
    """What the host can enforce, measured by behaviour where it matters."""

    kernel: str
    systemd: str
    cgroup: CgroupMode = Field(description="cgroup hierarchy: unified (v2), hybrid or legacy")
    bpf_firewall: Capability = Field(
        description="IPAddressDeny= blocks traffic (cgroup-v2 BPF works, bpf() allowed)"
    )
    protect_proc: Capability = Field(
        description="ProtectProc=invisible hides other users' processes (hidepid works)"
    )
    evidence: dict[str, Any] = Field(default_factory=dict)
    machine_id: str = Field(default="", description="/etc/machine-id of the host")
    hostname: str = Field(default="", description="the host's name")


class SandboxMatch(_Frozen):
    """The gateway's sandbox properties and those read back from the probe unit."""

    gateway_unit: str
    probe_unit: str
    gateway: dict[str, Any]
    probe: dict[str, Any]
    match: bool
    differences: tuple[str, ...] = ()


class ProofRecord(_Frozen):
    """Everything ``verify`` proved about one profile, signed by the host key."""

    format: Literal["agentgw-proof/1"] = FORMAT
    profile: str
    unit: str
    time: str = Field(description="ISO UTC time the record was made")
    isolation_mode: Literal["production", "convenience"]
    main_pid: int
    release: str | None = Field(description="the release dir current resolves to")
    host: HostFacts
    checks: tuple[Check, ...]
    isolated: bool = Field(description="true only when every check passed")
    reason: str
    exposure: float | None = Field(description="systemd-analyze security score of the unit")
    exposure_threshold: float
    sandbox: SandboxMatch
    key_fingerprint: str = ""
    signature: str = Field(default="", description="base64 Ed25519 signature, see record.py")

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)
