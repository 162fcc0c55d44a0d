"""A proof record as the gateway's own user may see it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from agentgw.registry.auth import (
    Refused,
)

if TYPE_CHECKING:
    pass



def redact_proof(stored: bytes) -> bytes:
    """A profile's own proof record as its gateway's user may see it: every check's name,
    result and how many attempts it made, not the evidence and reasons, which name the
    siblings' paths, addresses and MainPIDs. The signed record is for root and the admin
    group (``agentgw attest verify``)."""
    try:
        record = json.loads(stored)
    except ValueError as exc:
        raise Refused(503, "the proof record is not valid JSON") from exc
    if not isinstance(record, dict):
        raise Refused(503, "the proof record is not a JSON object")
    checks = []
    for check in record.get("checks") or []:
        if not isinstance(check, dict):
            continue
        evidence = check.get("evidence")
        attempts = evidence.get("attempts") if isinstance(evidence, dict) else None
        checks.append({
            "name": check.get("name"),
            "result": check.get("result"),
            "attempts": len(attempts) if isinstance(attempts, list) else None,
        })
    view = {
        "profile": record.get("profile"),
        "time": record.get("time"),
        "isolated": record.get("isolated"),
        "exposure": record.get("exposure"),
        "checks": checks,
        "redacted": "sibling paths, addresses and pids are shown to root and the admin "
        "group only; the signed record is theirs",
    }
    return json.dumps(view, indent=2).encode()
