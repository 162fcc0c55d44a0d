"""A proof record as verify makes one, for the signing and CLI tests."""

from __future__ import annotations

from typing import Any

from agentgw.model.proof import HostFacts, ProofRecord, SandboxMatch
from agentgw.proofs.checks import make_check

AT = "2025-01-01T00:00:00Z"


def sample_record(**changes: Any) -> ProofRecord:
    sandbox = {"User": "agent-api", "IPAddressDeny": ["0.0.0.0/0", "::/0"], "PrivateTmp": True}
    fields: dict[str, Any] = {
        "profile": "api",
        "unit": "agent-gateway@api.service",
        "time": AT,
        "isolation_mode": "production",
        "main_pid": 135,
        "release": "6b1fc43b1aff-a",
        "host": HostFacts(kernel="6.1.0", systemd="252.39", cgroup="unified",
                          bpf_firewall="enforced", protect_proc="enforced"),
        "checks": (
            make_check("egress", "passed", "denied", {"attempts": [{"tcp": "timeout"}]}, AT),
            make_check("exposure", "passed", "ok", {"score": 1.0, "threshold": 1.5}, AT),
        ),
        "isolated": True,
        "reason": "all 2 checks passed",
        "exposure": 1.0,
        "exposure_threshold": 1.5,
        "sandbox": SandboxMatch(gateway_unit="agent-gateway@api.service",
                                probe_unit="agentgw-probe-api-0.service", gateway=sandbox,
                                probe=sandbox, match=True),
    }
    fields.update(changes)
    return ProofRecord(**fields)
