"""Unix-socket helpers shared by agentgw's own servers (registry, sandbox broker)."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentgw.errors import AgentgwError, die


def in_use(path: Path) -> bool:
    """True when something accepts connections on ``path`` (so it must not be replaced)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(os.fspath(path))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Server:
    """Whose socket it is, for the errors of :func:`listen`: ``who`` else may be serving on it
    (see ``unit``), ``not_socket(message, hint=not_socket_hint)`` when something else is at
    the path, ``fail_hint`` when it cannot be bound."""

    who: str
    unit: str
    not_socket: Callable[..., AgentgwError]
    not_socket_hint: str
    fail_hint: str


def listen(
    path: Path, server: Server, *, mode: int, dir_mode: int, backlog: int, gid: int | None = None
) -> socket.socket:
    """A listening socket at ``path`` with ``mode`` (and group ``gid``, if given).

    A stale socket file is replaced; one that ``server.who`` still serves is an error naming
    its unit; anything else at ``path`` is ``server.not_socket(message, hint=...)``.
    """
    who, unit, fail_hint = server.who, server.unit, server.fail_hint
    not_socket, not_socket_hint = server.not_socket, server.not_socket_hint
    try:
        st = path.lstat()
    except FileNotFoundError:
        path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise not_socket(f"{path} exists and is not a socket", hint=not_socket_hint)
        if in_use(path):
            raise die(f"{path}: {who} is serving on it", hint=f"systemctl status {unit}")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        os.chmod(path, mode)
        if gid is not None:
            os.chown(path, 0, gid)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        path.unlink(missing_ok=True)
        raise die(f"cannot listen on {path}: {exc.strerror}", hint=fail_hint) from exc
    return sock
