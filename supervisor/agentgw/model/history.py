"""Records of the hash-chained history log and of in-flight operations (intents)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The history actions that move a profile's release (counted on /metrics, shown by status).
PROMOTE_ACTIONS = frozenset({"promote", "rollback"})


def history_tally(line: bytes) -> str | None:
    """The key a history line is tallied under when retention drops its file: profile, op,
    result (tab-separated); None for lines that are not a promote or rollback."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("profile"), str):
        return None
    if record.get("action") not in PROMOTE_ACTIONS:
        return None
    return "\t".join((record["profile"], str(record["action"]), str(record.get("result", ""))))


class Intent(BaseModel):
    """What a mutating operation is doing, written before it changes anything.

    A command that finds an intent left by a killed one repairs first: it finishes or undoes it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    op: Literal["promote", "rollback", "restart"]
    profile: str
    target: str  # the release dir name the profile is moving to
    previous: str | None  # the release dir name it came from (None: first promote)
    prior_previous: str | None = None  # where ``previous`` pointed before (restored on undo)
    phase: str
    pid: int
    started: float
    time: str


class HistoryRecord(BaseModel):
    """One line of history.jsonl. ``prev`` is the sha256 of the previous line (the chain)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    seq: int
    time: str
    action: str
    profile: str | None = None
    result: str
    detail: dict[str, Any] = Field(default_factory=dict)
    machine: dict[str, str] | None = Field(
        default=None, description="machine_id and hostname of the host that wrote it"
    )
    actor: str | None = Field(
        default=None, description="the user who ran it (SUDO_USER under sudo); None: older"
    )
    prev: str
