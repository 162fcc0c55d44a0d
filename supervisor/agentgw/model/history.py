"""Records of the hash-chained history log and of in-flight operations (intents)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
