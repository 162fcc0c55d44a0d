"""Whether a profile is isolated, judged from its last proof record (pure)."""

from __future__ import annotations

from agentgw.fsio import (
    Read,
    iso,
    parse_iso,
)
from agentgw.model.status import (
    Isolation,
    IsolationState,
)


def judge_isolation(
    *, isolated_mode: bool, profile: str, proof: Read, started: float | None, now: float
) -> Isolation:
    """The last proof record, judged: only a passing proof of the running process is isolation.

    Convenience mode is never isolated. A check that the host could not enforce makes the
    profile "not enforced", never "isolated"; a proof older than the running process is
    "stale" (it proved an earlier process).
    """
    record = proof.data if isinstance(proof.data, dict) else None
    proved = parse_iso(record.get("time")) if record else None

    def verdict(state: IsolationState, reason: str) -> Isolation:
        return Isolation(
            state=state,
            reason=reason,
            proof_time=iso(proved) if proved is not None else None,
            proof_age_s=max(0.0, now - proved) if proved is not None else None,
        )

    if not isolated_mode:
        return verdict("not isolated", "convenience mode: every profile runs as one shared user")
    if proof.error:
        return verdict("unproven", f"proof record unreadable: {proof.error}")
    if record is None:
        return verdict("unproven", f"no proof record: run 'agentgw verify {profile}'")
    if record.get("profile") != profile:
        return verdict("unproven", f"the proof record names profile {record.get('profile')!r}")
    if proved is None:
        return verdict("unproven", "the proof record has no valid time")
    raw_checks = record.get("checks")
    checks = [c for c in raw_checks if isinstance(c, dict)] if isinstance(raw_checks, list) else []
    failed = [str(c.get("name")) for c in checks if c.get("result") == "failed"]
    unenforced = [str(c.get("name")) for c in checks if c.get("result") == "not-enforced"]
    if failed:
        return verdict("not isolated", "failed: " + ", ".join(failed))
    if unenforced:
        return verdict("not enforced", "the host cannot enforce: " + ", ".join(unenforced))
    if record.get("isolated") is not True or not checks:
        return verdict("not isolated", "the proof record says not isolated")
    if started is not None and proved < started:
        return verdict(
            "stale",
            f"proved at {iso(proved)}, before the running process started at {iso(started)}",
        )
    return verdict("isolated", f"{len(checks)} checks passed")
