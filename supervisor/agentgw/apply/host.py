"""Carry out planned actions. Each one is idempotent, so a killed run converges on re-run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from typing import Protocol

from agentgw import run
from agentgw.errors import AgentgwError
from agentgw.fsio import ensure_dir, write_atomic
from agentgw.log import get_logger
from agentgw.model.actions import (
    Action,
    ArchiveDir,
    EnsureDir,
    EnsureGroup,
    EnsureUser,
    RemovePath,
    UnitAction,
    WriteFile,
)

log = get_logger(__name__)


class UnitControl(Protocol):
    """The slice of bus/ that apply needs (the bus object, or a fake in pure tests)."""

    def daemon_reload(self) -> None: ...
    def enable(self, names: list[str]) -> None: ...
    def disable(self, names: list[str]) -> None: ...
    def start(self, name: str) -> str: ...
    def stop(self, name: str) -> str: ...
    def restart(self, name: str) -> str: ...


def apply_actions(
    actions: Sequence[Action],
    units: UnitControl | None,
    *,
    on_done: Callable[[Action], None] | None = None,
) -> None:
    for action in actions:
        apply_action(action, units)
        log.info("applied", action=action.describe())
        if on_done is not None:
            on_done(action)


def apply_action(action: Action, units: UnitControl | None) -> None:
    match action:
        case EnsureGroup():
            if run.run(["getent", "group", action.name], check=False).returncode != 0:
                run.run(["groupadd", "--system", action.name])
        case EnsureUser():
            if run.run(["getent", "passwd", action.name], check=False).returncode != 0:
                run.run(
                    [
                        "useradd",
                        "--system",
                        "--gid",
                        action.group,
                        "--no-create-home",
                        "--home-dir",
                        action.home,
                        "--shell",
                        "/usr/sbin/nologin",
                        "--comment",
                        "agentgw gateway",
                        action.name,
                    ]
                )
        case EnsureDir():
            ensure_dir(action.path, owner=action.owner, group=action.group, mode=action.mode)
        case WriteFile():
            write_atomic(
                action.path,
                action.content,
                owner=action.owner,
                group=action.group,
                mode=action.mode,
            )
        case RemovePath():
            remove_path(action)
        case ArchiveDir():
            action.dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if action.path.exists():
                # rename is atomic on one filesystem; data is moved, never deleted.
                shutil.move(os.fspath(action.path), os.fspath(action.dest))
        case UnitAction():
            apply_unit(action, units)


def remove_path(action: RemovePath) -> None:
    path = action.path
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        try:
            path.rmdir()
        except OSError as exc:
            raise AgentgwError(
                f"{path} is not empty; refusing to delete data",
                hint="move what is left in it aside, then re-run apply --prune",
            ) from exc


def apply_unit(action: UnitAction, units: UnitControl | None) -> None:
    if units is None:
        raise AgentgwError(
            f"cannot {action.verb} {action.unit}: no connection to systemd",
            hint="run on a host where systemd is PID 1 (or inside 'agentgw lab')",
        )
    match action.verb:
        case "daemon-reload":
            units.daemon_reload()
        case "enable":
            units.enable([action.unit])
        case "disable":
            units.disable([action.unit])
        case "start":
            units.start(action.unit)
        case "stop":
            units.stop(action.unit)
        case "restart":
            units.restart(action.unit)
