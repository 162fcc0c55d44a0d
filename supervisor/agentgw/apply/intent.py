"""Intent records: written before a mutating operation changes anything, removed at commit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NotRequired, TypedDict, Unpack

import psutil

from agentgw.fsio import write_atomic
from agentgw.model.history import Intent


def intent_path(intents: Path, profile: str) -> Path:
    return intents / f"{profile}.json"


class IntentFields(TypedDict):
    """What an operation records of itself (the pid, its start and the time are added)."""

    op: str
    profile: str
    target: str
    previous: str | None
    phase: str
    prior_previous: NotRequired[str | None]


def write_intent(intents: Path, **fields: Unpack[IntentFields]) -> Intent:
    me = psutil.Process()
    profile = fields["profile"]
    intent = Intent.model_validate(
        {
            "prior_previous": None,
            **fields,
            "pid": me.pid,
            "started": me.create_time(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    intents.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(
        intent_path(intents, profile),
        intent.model_dump_json() + "\n",
        owner="root",
        group="root",
        mode=0o600,
    )
    return intent


def set_phase(intents: Path, intent: Intent, phase: str) -> Intent:
    updated = intent.model_copy(update={"phase": phase})
    write_atomic(
        intent_path(intents, intent.profile),
        updated.model_dump_json() + "\n",
        owner="root",
        group="root",
        mode=0o600,
    )
    return updated


def read_intent(intents: Path, profile: str) -> Intent | None:
    try:
        return Intent.model_validate_json(intent_path(intents, profile).read_text())
    except FileNotFoundError:
        return None


def clear_intent(intents: Path, profile: str) -> None:
    intent_path(intents, profile).unlink(missing_ok=True)
