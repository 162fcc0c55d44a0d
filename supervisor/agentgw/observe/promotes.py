"""The last promote or rollback of each profile, from the history log (pure parse, cached read)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentgw import logroll
from agentgw.fsio import (
    parse_iso,
)
from agentgw.model.history import PROMOTE_ACTIONS
from agentgw.model.status import (
    PromoteInfo,
)


def promote_of(record: Mapping[str, Any]) -> PromoteInfo | None:
    """A history record (``{time, action, profile, result, detail: {release, reason}}``)."""
    time_text, action = record.get("time"), record.get("action")
    if not isinstance(time_text, str) or not isinstance(action, str):
        return None
    detail = record.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    release, reason = detail.get("release"), detail.get("reason")
    return PromoteInfo(
        time=time_text,
        action=action,
        result=str(record.get("result", "")),
        release=release if isinstance(release, str) else None,
        reason=reason if isinstance(reason, str) and reason else None,
        timestamp=parse_iso(time_text),
    )


def last_promotes(lines: list[bytes]) -> dict[str, PromoteInfo]:
    """The last promote or rollback per profile in history JSONL; malformed lines are skipped.

    (``agentgw history --verify`` is what checks the log's integrity, not status.)
    """
    found: dict[str, PromoteInfo] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("action") not in PROMOTE_ACTIONS:
            continue
        profile, info = record.get("profile"), promote_of(record)
        if isinstance(profile, str) and info is not None:
            found[profile] = info
    return found


def _last_promotes(data: bytes) -> dict[str, PromoteInfo]:
    return last_promotes(data.splitlines())


def read_promotes(history: Path) -> dict[str, PromoteInfo]:
    """Last promote per profile in the retained files; each file is parsed once (the log is
    append-only, and rotated files never change: see logroll.parse_files)."""
    try:
        parts = logroll.parse_files(history, _last_promotes)[1]
    except (OSError, ValueError):
        return {}
    found: dict[str, PromoteInfo] = {}
    for part in parts:
        found.update(part)
    return found
