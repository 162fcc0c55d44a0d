"""The one error type of agentgw: a message, a hint and an exit code.

The CLI prints it once as ``error: <message>`` (plus ``hint: <hint>``); the HTTP layer maps the
same errors to JSON. Exit codes follow DESIGN.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from pathlib import Path


class Exit(IntEnum):
    """Process exit codes, stable across every command."""

    OK = 0
    FAILED = 1
    USAGE = 2
    VERIFY = 3
    LOCKED = 4


class AgentgwError(Exception):
    """An error a user can act on: what went wrong, what to do, and how the process exits."""

    def __init__(self, message: str, *, hint: str = "", code: Exit = Exit.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        return self.message


def die(message: str, *, hint: str = "", code: Exit = Exit.FAILED) -> AgentgwError:
    """Build an error to ``raise``; reads like mkosi's ``die(msg, hint=)``."""
    return AgentgwError(message, hint=hint, code=code)


def usage(message: str, *, hint: str = "") -> AgentgwError:
    """Bad input: exit 2, and nothing on the host was changed."""
    return AgentgwError(message, hint=hint, code=Exit.USAGE)


def no_profile(name: str, known: Iterable[str], etc: Path | None = None) -> AgentgwError:
    """The one answer to a profile name that is not configured (exit 2): the known ones, and
    where their files are when that is known."""
    listed = ", ".join(known) or "none"
    where = f" (files in {etc}/gateways)" if etc is not None else ""
    return usage(f"no profile named {name!r}", hint=f"configured profiles: {listed}{where}")
