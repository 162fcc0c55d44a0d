"""sd_notify(3) with the stdlib: tell systemd (Type=notify) the gateway is ready or stopping."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def socket_address(value: str) -> str | bytes:
    """NOTIFY_SOCKET as a socket address: ``@name`` is the abstract name ``\\0name``."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to NOTIFY_SOCKET; False when there is none.

    Outside systemd there is no socket and nothing to tell, which is not an error.
    """
    target = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not target:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(message.encode(), socket_address(target))
    return True
