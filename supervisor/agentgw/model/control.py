"""The record of one promote, rollback or restart: what happened, phase by phase."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agentgw.model.status import StartFailure


class PhaseTime(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    name: str
    ms: float
    detail: str = ""


class Sibling(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    unit: str
    pid: int
    started: float


class Outcome(BaseModel):
    """``result``: ok; rolled_back (the target failed, the previous release runs aligned);
    failed (even the way back failed: the profile needs attention)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    op: Literal["promote", "rollback", "restart"]
    profile: str
    release: str
    previous: str | None
    result: Literal["ok", "rolled_back", "failed"]
    reason: str = ""
    alignment: str = ""
    phases: list[PhaseTime] = Field(default_factory=list)
    siblings_before: list[Sibling] = Field(default_factory=list)
    siblings_unchanged: bool = True
    siblings_changed: list[str] = Field(default_factory=list)
    siblings_own_ops: list[str] = Field(
        default_factory=list,
        description="siblings restarted meanwhile by their own agentgw operation (not counted)",
    )
    recovered: str = ""
    start_failure: StartFailure | None = Field(
        default=None,
        description="why the target did not start (readiness, cause, fix, last log lines)",
    )
