"""The actions ``plan`` produces and ``apply`` carries out, one small frozen record each.

Each action is idempotent on its own, so a run killed at any point converges when re-run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    why: str = ""


class EnsureGroup(_Action):
    kind: Literal["group"] = "group"
    name: str

    def describe(self) -> str:
        return f"+ group {self.name} (system)"


class EnsureUser(_Action):
    kind: Literal["user"] = "user"
    name: str
    group: str
    home: Path

    def describe(self) -> str:
        return f"+ user {self.name} (system, nologin, group {self.group}, home {self.home})"


class EnsureDir(_Action):
    kind: Literal["dir"] = "dir"
    path: Path
    owner: str
    group: str
    mode: int

    def describe(self) -> str:
        sign = "~" if self.why else "+"
        detail = f" ({self.why})" if self.why else ""
        return f"{sign} dir  {self.path} {self.owner}:{self.group} {self.mode:04o}{detail}"


class WriteFile(_Action):
    kind: Literal["file"] = "file"
    path: Path
    content: str
    owner: str
    group: str
    mode: int
    old: str | None = None

    def describe(self) -> str:
        sign = "+" if self.old is None and not self.why else "~"
        detail = f" ({self.why})" if self.why else ""
        return f"{sign} file {self.path} {self.owner}:{self.group} {self.mode:04o}{detail}"


class RemovePath(_Action):
    kind: Literal["remove"] = "remove"
    path: Path

    def describe(self) -> str:
        return f"- {self.path} ({self.why or 'not wanted'})"


class ArchiveDir(_Action):
    """Move a removed profile's data aside; data is never deleted."""

    kind: Literal["archive"] = "archive"
    path: Path
    dest: Path

    def describe(self) -> str:
        return f"> archive {self.path} -> {self.dest}"


class UnitAction(_Action):
    kind: Literal["unit"] = "unit"
    verb: Literal["daemon-reload", "enable", "disable", "start", "stop", "restart"]
    unit: str = ""

    def describe(self) -> str:
        target = f" {self.unit}" if self.unit else ""
        detail = f" ({self.why})" if self.why else ""
        return f"* systemd {self.verb}{target}{detail}"


Action = Annotated[
    EnsureGroup | EnsureUser | EnsureDir | WriteFile | RemovePath | ArchiveDir | UnitAction,
    Field(discriminator="kind"),
]


def keep_running(
    unit: str, state: tuple[str, str], *, enable_why: str, restart_why: str | None = None
) -> list[Action]:
    """Enable ``unit`` and start it unless it runs; restart it when ``restart_why`` says its
    settings changed. ``state``: its (ActiveState, UnitFileState) as observed ("" unloaded)."""
    active, enabled = state
    ops: list[Action] = []
    if enabled != "enabled":
        ops.append(UnitAction(verb="enable", unit=unit, why=enable_why))
    if active in ("", "inactive", "failed"):
        ops.append(UnitAction(verb="start", unit=unit, why=f"was {active or 'not loaded'}"))
    elif restart_why is not None:
        ops.append(UnitAction(verb="restart", unit=unit, why=restart_why))
    return ops
