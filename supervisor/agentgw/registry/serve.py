"""Serve the registry with uvicorn on a unix socket (peer-credential authz) and optional TCP.

Under agentgw-registry.service the unix socket is systemd's (agentgw-registry.socket, socket
activation): it exists, 0666 root:root, before the service starts, the first connection starts
the service, and the process only accepts on the descriptor it was passed (``$LISTEN_FDS``).
Started by hand (development, tests) it makes the socket itself, with the same mode. The mode is
0666 because authorisation is by the kernel's peer credentials, not by who may connect. The
listening sockets are handed to uvicorn, whose HTTP protocol is subclassed only to read those
credentials from the accepted socket (see :mod:`agentgw.registry.auth`). Readiness and stopping
are reported to systemd (``Type=notify``) by sd_notify(3) (:mod:`agentgw.bus.daemon`).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from agentgw.bus.daemon import listen_sockets, notify
from agentgw.config.load import load_config
from agentgw.errors import AgentgwError, die, usage
from agentgw.log import get_logger
from agentgw.model.fields import Listen
from agentgw.observe.status import status_inputs, status_now
from agentgw.observe.units import systemd_here
from agentgw.paths import Layout
from agentgw.registry.app import Options, create_app
from agentgw.registry.auth import connection_of, with_connection
from agentgw.unixsock import Server, listen

if TYPE_CHECKING:
    from agentgw.bus.watch import UnitWatch

log = get_logger(__name__)

SOCKET_MODE = 0o666
BACKLOG = 1024


class PeerCredProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus the connection's identity in every request scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = with_connection(self.app, connection_of(transport.get_extra_info("socket")))


class NotifyingServer(uvicorn.Server):
    """uvicorn's server, telling systemd when it is ready and stopping.

    Socket files are removed in ``shutdown``: after a signal uvicorn re-raises it once the loop
    ends, so code after ``run()`` never runs.
    """

    def __init__(self, config: uvicorn.Config, remove: Sequence[Path] = ()) -> None:
        super().__init__(config)
        self.remove = tuple(remove)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            notify("READY=1\nSTATUS=serving the registry")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        notify("STOPPING=1")
        await super().shutdown(sockets)
        for path in self.remove:
            path.unlink(missing_ok=True)


def unix_listener(path: Path) -> socket.socket:
    """A listening socket at ``path`` (mode 0666); a stale socket file is replaced."""
    server = Server(who="another process", unit="agentgw-registry", not_socket=usage,
                    not_socket_hint="remove it or pick --socket", fail_hint="run as root")
    return listen(path, server, mode=SOCKET_MODE, dir_mode=0o755, backlog=BACKLOG)


def tcp_listener(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the
    # socket object says TCP, and without it small answers wait ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        hint = "another process uses the port" if exc.errno == errno.EADDRINUSE else ""
        raise die(f"cannot listen on {host}:{port}: {exc.strerror}", hint=hint) from exc
    return sock


def private_network(proc: Path = Path("/proc")) -> bool:
    """True when this process has a network namespace other than PID 1's (PrivateNetwork=yes),
    where a TCP listener is unreachable from the host; False when shared or undecidable."""
    try:
        return os.readlink(proc / "self" / "ns" / "net") != os.readlink(proc / "1" / "ns" / "net")
    except OSError:
        return False


def read_token(path: Path) -> bytes:
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise die(f"cannot read the registry token {path}: {exc.strerror}",
                  hint="registry.token_file must name a file readable by root") from exc
    if not token:
        raise usage(f"the registry token {path} is empty", hint="write a long random token to it")
    return token


def uvicorn_config(app: ASGIApp) -> uvicorn.Config:
    """How every registry server runs (also the benchmark's baseline, so both match)."""
    return uvicorn.Config(
        app,
        http=PeerCredProtocol,
        lifespan="on",  # the app's lifespan watches the unit-signal socket
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_config=None,
        log_level="warning",
    )


def run_server(
    app: ASGIApp, sockets: Sequence[socket.socket], remove: Sequence[Path] = ()
) -> None:
    """Serve ``app`` on ``sockets`` until SIGTERM/SIGINT, then remove the ``remove`` files."""
    NotifyingServer(uvicorn_config(app), remove).run(sockets=list(sockets))


def open_watch(layout: Layout) -> UnitWatch | None:
    """A watch of the gateway units where systemd manages ``layout``; None elsewhere, or when
    it cannot subscribe (then every ``no-cache`` request takes a new snapshot)."""
    if layout.root != Path("/") or not systemd_here():
        return None
    from agentgw.bus.watch import UnitWatch

    try:
        return UnitWatch().open()
    except AgentgwError as exc:
        log.warning("unit_watch_unavailable", error=exc.message)
        return None


def serve(
    layout: Layout,
    *,
    etc: Path,
    socket_path: Path | None,
    tcp: Listen | None,
    token: bytes | None,
    ttl: float = 1.0,
) -> None:
    """Serve the registry of ``layout`` (config from ``etc``) until stopped."""
    if socket_path is None and tcp is None:
        raise usage("nothing to serve on", hint="set registry.socket: true, or pass --tcp")
    if tcp is not None and token is None:
        raise usage(
            f"TCP {tcp} needs a bearer token",
            hint="set registry.token_file in agentgw.yaml (or serve on the unix socket only)",
        )
    if tcp is not None and private_network():
        raise die(
            f"registry.tcp {tcp} is set, but this process has a private network namespace: "
            "nobody on the host could reach it",
            hint="add the TCP drop-in described in agentgw-registry.service "
            "(PrivateNetwork=no, AF_INET, IPAddressAllow=localhost)",
        )
    watch = open_watch(layout)
    app = create_app(layout, lambda: load_config(etc), lambda c: status_now(layout, c), Options(
        token=token, ttl=ttl, watch=watch, inputs=lambda c: status_inputs(layout, etc, c.profiles)
    ))
    sockets: list[socket.socket] = []
    owned: list[Path] = []
    try:
        passed = listen_sockets()
        sockets += passed
        if socket_path is not None and not passed:
            sockets.append(unix_listener(socket_path))
            owned.append(socket_path)
        if tcp is not None:
            sockets.append(tcp_listener(str(tcp.host), tcp.port))
        where = "systemd" if passed else os.fspath(socket_path) if socket_path else None
        log.info("registry_serving", socket=where, tcp=str(tcp) if tcp else None)
        run_server(app, sockets, owned)
    finally:
        if watch is not None:
            watch.close()
        for sock in sockets:
            sock.close()
        for path in owned:
            path.unlink(missing_ok=True)
