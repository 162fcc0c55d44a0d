"""sd_notify(3) and sd_listen_fds(3), libsystemd's own through pystemd: readiness of agentgw's
``Type=notify`` services (registry, sandbox broker) and the registry's socket activation.

(The gateways' launcher stays stdlib-only: it runs in the gateway's environment, without this
package's dependencies.)
"""

from __future__ import annotations

import os
import socket

import pystemd.daemon

from agentgw.errors import die


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``, lines joined by newlines) to systemd; False when not
    run by a notify unit (no ``$NOTIFY_SOCKET``)."""
    sent: int = pystemd.daemon.notify(False, state)
    if sent < 0:
        raise die(f"cannot notify systemd: error {-sent}",
                  hint="NotifyAccess= in the unit must allow the main process")
    return sent > 0


def listen_sockets() -> list[socket.socket]:
    """The sockets systemd passed to this process (``$LISTEN_FDS`` for ``$LISTEN_PID``), in the
    socket unit's order; empty when started without socket activation. The variables are
    removed from the environment, so no child takes the sockets for its own."""
    count = pystemd.daemon.listen_fds(True)
    if count < 0:
        raise die(f"cannot read the sockets systemd passed: error {-count}",
                  hint="LISTEN_FDS/LISTEN_PID are set by systemd for socket-activated units")
    if count:  # libsystemd unset them in C; os.environ (what subprocess passes on) keeps a copy
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    first = pystemd.daemon.LISTEN_FDS_START
    return [socket.socket(fileno=fd) for fd in range(first, first + count)]
