"""Who is calling: kernel peer credentials on the unix socket, a bearer token on TCP.

uvicorn does not put the peer's credentials in the ASGI scope, so the server's protocol reads
``SO_PEERCRED`` (and ``SO_PEERGROUPS``) from the accepted socket once per connection and wraps
the app with :func:`with_connection`, which adds a :class:`Connection` to every request scope of
that connection under ``scope["extensions"][CONNECTION_KEY]``. A request without it was not
accepted by our server and is refused (fail closed). Tests inject a peer the same way.

:func:`authorize` is pure: root and members of the admin group see every profile; a uid that a
profile's gateway runs as sees that profile only; anyone else is refused.
"""

from __future__ import annotations

import grp
import hmac
import pwd
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from agentgw.errors import AgentgwError, Exit
from agentgw.model.host import HostConfig

CONNECTION_KEY = "agentgw.connection"
# Linux's SO_PEERGROUPS (since 4.13); Python's socket module does not name it.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_UCRED = struct.Struct("3i")
_GROUPS_FIRST_TRY = 64
_NGROUPS_MAX = 65536


class Refused(AgentgwError):
    """A request the registry answers with an HTTP error status (as JSON)."""

    def __init__(
        self, status: int, message: str, *, hint: str = "", headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, hint=hint, code=Exit.FAILED)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a unix socket, as the kernel recorded it at connect()."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Connection:
    """How a request arrived: a unix socket with its peer, or TCP (authenticated by token)."""

    transport: Literal["unix", "tcp"]
    peer: Peer | None = None


@dataclass(frozen=True)
class Caller:
    """An authorised caller; ``profiles`` is None when it may see every profile."""

    name: str
    profiles: frozenset[str] | None

    def sees(self, profile: str) -> bool:
        return self.profiles is None or profile in self.profiles


class Accounts(Protocol):
    """User and group names (the system databases; tests pass a table)."""

    def user_name(self, uid: int) -> str | None: ...

    def group_id(self, name: str) -> int | None: ...


class SystemAccounts:
    def user_name(self, uid: int) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return None

    def group_id(self, name: str) -> int | None:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None


def peer_groups(sock: socket.socket) -> tuple[int, ...]:
    """The peer's supplementary groups at connect(); empty when the kernel cannot say.

    An empty answer only narrows access (admin then needs the primary group), so it fails
    closed.
    """
    for size in (_GROUPS_FIRST_TRY, _NGROUPS_MAX):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * size)
        except OSError:
            continue
        return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
    return ()


def peer_credentials(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return Peer(pid=pid, uid=uid, gid=gid, groups=peer_groups(sock))


def connection_of(sock: socket.socket | None) -> Connection | None:
    """Identify an accepted connection; None when it cannot be identified (then refused)."""
    if sock is None:
        return None
    if sock.family == socket.AF_UNIX:
        try:
            return Connection("unix", peer_credentials(sock))
        except OSError:
            return None
    return Connection("tcp")


def with_connection(app: ASGIApp, connection: Connection | None) -> ASGIApp:
    """``app`` with ``connection`` added to the scope of every HTTP request it receives."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and connection is not None:
            extensions = {**(scope.get("extensions") or {}), CONNECTION_KEY: connection}
            scope = {**scope, "extensions": extensions}
        await app(scope, receive, send)

    return wrapped


def connection_in(scope: Scope) -> Connection | None:
    found = (scope.get("extensions") or {}).get(CONNECTION_KEY)
    return found if isinstance(found, Connection) else None


def bearer(authorization: str | None) -> bytes | None:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip().encode(errors="surrogateescape")


def authorize(
    connection: Connection | None,
    authorization: str | None,
    *,
    host: HostConfig,
    profiles: Iterable[str],
    token: bytes | None,
    accounts: Accounts,
) -> Caller:
    """The caller of a request and what it may see, or :class:`Refused` (401/403)."""
    if connection is None:
        raise Refused(
            403,
            "the connection could not be identified",
            hint="connect through the socket 'agentgw registry serve' listens on",
        )
    if connection.transport == "tcp":
        if token is None:
            raise Refused(403, "TCP access needs a bearer token",
                          hint="set registry.token_file in agentgw.yaml")
        given = bearer(authorization)
        if given is None or not hmac.compare_digest(given, token):
            raise Refused(
                401,
                "missing or wrong bearer token",
                hint="send 'Authorization: Bearer <token>' with the token of registry.token_file",
                headers={"WWW-Authenticate": 'Bearer realm="agentgw"'},
            )
        return Caller("token", None)
    peer = connection.peer
    if peer is None:
        raise Refused(403, "the unix socket peer has no credentials")
    name = accounts.user_name(peer.uid)
    shown = name or f"uid {peer.uid}"
    if peer.uid == 0:
        return Caller(shown, None)
    admin = accounts.group_id(host.admin_group)
    if admin is not None and admin in (peer.gid, *peer.groups):
        return Caller(shown, None)
    own = frozenset(p for p in profiles if name is not None and host.user(p) == name)
    if own:
        return Caller(shown, own)
    raise Refused(
        403,
        f"{shown} may not read the registry",
        hint=f"root, members of group {host.admin_group}, and a profile's own user may",
    )
