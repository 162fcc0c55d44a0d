"""Which host a document comes from, and which schema it follows.

Every ``--json`` document, history record and proof record carries the host's machine-id and
hostname, so results collected from a fleet can be told apart, and ``schema_version``, so a
reader knows what it holds. Read once per process.
"""

from __future__ import annotations

import functools
import os
import pwd
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MACHINE_ID = Path("/etc/machine-id")


@functools.cache
def identity() -> dict[str, str]:
    """``{"machine_id": …, "hostname": …}``; an unreadable machine-id is ""."""
    try:
        machine_id = MACHINE_ID.read_text(encoding="ascii", errors="replace").strip()[:64]
    except OSError:
        machine_id = ""
    return {"machine_id": machine_id, "hostname": socket.gethostname()}


def stamp(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with the schema version and the host's identity first (its own keys win)."""
    return {"schema_version": SCHEMA_VERSION, "machine": identity(), **doc}


def actor() -> str:
    """Who runs this command: the invoking user of ``sudo`` (SUDO_USER, trusted only when
    running as root: sudo sets it), else the name of the real uid (its number if unnamed)."""
    uid = os.getuid()
    sudo_user = os.environ.get("SUDO_USER", "")
    if uid == 0 and sudo_user and sudo_user != "root":
        return sudo_user
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
