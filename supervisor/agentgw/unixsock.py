"""Unix-socket helpers shared by agentgw's own servers (registry, sandbox broker)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def in_use(path: Path) -> bool:
    """True when something accepts connections on ``path`` (so it must not be replaced)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(os.fspath(path))
        except OSError:
            return False
    return True
