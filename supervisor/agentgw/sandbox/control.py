"""The broker's control socket: connections to the profiles' sockets, passed by the relays.

Each relay (:mod:`agentgw.sandbox.relay`, root, for one profile) connects to
``/run/agentgw/sandbox/control.sock`` (0600 root, made by ``agentgw-sandbox.socket``) once per
caller and sends one line, the profile's name, with the caller's connection attached
(SCM_RIGHTS). Only a root peer is believed (SO_PEERCRED); a bad name, a missing or foreign
descriptor is dropped with a warning. The caller's own authorisation (root or the profile's
user) stays with :meth:`agentgw.sandbox.broker.Broker.handle`, per connection.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from agentgw.log import get_logger
from agentgw.model.fields import PROFILE_NAME_RE
from agentgw.sandbox.broker import peer_of

log = get_logger(__name__)

MAX_MESSAGE = 64
Passed = Callable[[str, socket.socket], None]


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


def receive(relay: socket.socket) -> tuple[str, socket.socket] | None:
    """The profile and caller's connection one relay sent; None (logged) if it is not one."""
    peer = peer_of(relay)
    message, fds, _, _ = socket.recv_fds(relay, MAX_MESSAGE, 1)
    passed = [socket.socket(fileno=fd) for fd in fds]
    profile = message.decode(errors="replace").strip()
    reason = ""
    if peer.uid != 0:
        reason = f"control peer uid {peer.uid} is not root"
    elif not PROFILE_NAME_RE.fullmatch(profile):
        reason = f"bad profile name {profile[:30]!r}"
    elif len(passed) != 1:
        reason = "no connection attached"
    elif (passed[0].family, passed[0].type) != (socket.AF_UNIX, socket.SOCK_STREAM):
        reason = "the attached descriptor is not a unix stream socket"
    if reason:
        log.warning("sandbox_control_refused", reason=reason, pid=peer.pid)
        for sock in passed:
            sock.close()
        return None
    return profile, passed[0]


async def _one(relay: socket.socket, on_client: Passed) -> None:
    with relay:
        relay.setblocking(False)
        try:
            async with asyncio.timeout(10):
                await _readable(relay)
            got = receive(relay)
        except (TimeoutError, OSError) as exc:
            log.warning("sandbox_control_failed", reason=str(exc) or "timeout")
            return
    if got is not None:
        on_client(*got)


async def serve_control(control: socket.socket, on_client: Passed) -> None:
    """Accept relays on ``control`` until cancelled; ``on_client(profile, connection)`` for
    each connection passed."""
    loop = asyncio.get_running_loop()
    control.setblocking(False)
    pending: set[asyncio.Task[None]] = set()
    try:
        while True:
            relay, _ = await loop.sock_accept(control)
            task = asyncio.create_task(_one(relay, on_client))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        for task in pending:
            task.cancel()
