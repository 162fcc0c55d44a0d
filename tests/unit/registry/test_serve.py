"""The server side: sd_notify datagrams, listening sockets, and SO_PEERCRED through uvicorn.

The peer-credential test runs the real server (uvicorn with PeerCredProtocol) on a real unix
socket and connects from processes of two different uids.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from starlette.types import ASGIApp

from agentgw.errors import AgentgwError
from agentgw.registry.app import Options, create_app
from agentgw.registry.serve import (
    NotifyingServer,
    notify,
    tcp_listener,
    unix_listener,
    uvicorn_config,
)
from tests.unit.registry.conftest import Host, running

CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"GET /v1/profiles HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.write(data.partition(b"\r\n\r\n")[2].decode())
"""


def test_notify_sends_one_datagram_to_notify_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """READY=1 arrives as one datagram at $NOTIFY_SOCKET (libsystemd's sd_notify, through
    pystemd), path or abstract (@) address; without the variable nothing is sent."""
    path = tmp_path / "notify"
    abstract = f"@agentgw-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sink2:
        sink.bind(os.fspath(path))
        sink2.bind("\0" + abstract[1:])
        monkeypatch.setenv("NOTIFY_SOCKET", os.fspath(path))
        assert notify("READY=1")
        monkeypatch.setenv("NOTIFY_SOCKET", abstract)
        assert notify("STOPPING=1")
        assert (b"READY=1", b"STOPPING=1") == (sink.recv(100), sink2.recv(100))
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")


# Run in a child: a listening unix socket as fd 3, LISTEN_FDS/LISTEN_PID as systemd sets them.
ACTIVATED = r"""
import os, socket, sys
from agentgw.bus.daemon import listen_sockets
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); s.listen(1)
fd = s.detach()
if fd != 3:
    os.dup2(fd, 3); os.close(fd)
if sys.argv[2] == "mine":
    os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
else:
    os.environ.update(LISTEN_FDS="1", LISTEN_PID="1")
found = listen_sockets()
print([(f.fileno(), f.family.name, f.type.name, f.getsockname()) for f in found],
      "LISTEN_FDS" in os.environ)
"""


@pytest.mark.parametrize(("pid", "expected"), [
    ("mine", "[(3, 'AF_UNIX', 'SOCK_STREAM', '{sock}')] False"),
    ("other", "[] True"),
])
def test_listen_sockets_takes_what_systemd_passed(tmp_path: Path, pid: str, expected: str) -> None:
    """The socket systemd passes as fd 3 (socket activation) comes back as a listening socket
    object, and the variables are removed for children; a LISTEN_PID of another process (the
    variables inherited) gives none and leaves them."""
    sock = os.fspath(tmp_path / "s.sock")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", ACTIVATED, sock, pid], env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected.format(sock=sock)


def test_unix_listener_mode_and_stale_socket(tmp_path: Path) -> None:
    """The socket is 0666 (authorisation is by peer credentials); a stale socket file is
    replaced, a live one or a non-socket is refused."""
    path = tmp_path / "run" / "registry.sock"
    first = unix_listener(path)
    try:
        assert 0o666 == stat.S_IMODE(path.stat().st_mode)
        with pytest.raises(AgentgwError, match="another process is serving"):
            unix_listener(path)
    finally:
        first.close()
    unix_listener(path).close()  # stale now: replaced
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(AgentgwError, match="not a socket"):
        unix_listener(path)


def test_tcp_connections_have_nodelay() -> None:
    """Accepted TCP connections have TCP_NODELAY (else small answers wait on delayed ACKs)."""
    listener = tcp_listener("127.0.0.1", 0)
    with listener, socket.create_connection(listener.getsockname()):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


@contextmanager
def real_server(app: ASGIApp, path: Path) -> Iterator[None]:
    """The registry's uvicorn server on a unix socket, in a thread, removed afterwards."""
    server = NotifyingServer(uvicorn_config(app), remove=[path])
    with running(server, [unix_listener(path)]):
        yield
    assert not path.exists(), "the socket file is removed at shutdown"


def get_as(path: Path, *setpriv: str) -> dict[str, object]:
    argv = [*setpriv, sys.executable, "-I", "-c", CLIENT, os.fspath(path)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
    doc = json.loads(out)
    assert isinstance(doc, dict)
    return doc


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to connect as a second uid")
def test_peer_credentials_reach_the_app_through_uvicorn(host: Host) -> None:
    """Through the real server: a root client sees every profile, a client running as
    nobody is refused 403 — the uid came from the kernel, not from the request."""
    app = create_app(host.layout, lambda: host.config, lambda c: [], Options(ttl=1.0))
    # Not under pytest's 0700 tmp dir: nobody must be able to reach the socket.
    with tempfile.TemporaryDirectory() as where:
        os.chmod(where, 0o755)  # noqa: S103 - a socket dir others must traverse
        path = Path(where) / "registry.sock"
        with real_server(app, path):
            assert "production" == get_as(path)["isolation_mode"]
            refused = get_as(path, "setpriv", "--reuid=65534", "--regid=65534",
                             "--clear-groups")
            assert 403 == refused["status"]


def test_status_client_through_the_real_server(host: Host, tmp_path: Path) -> None:
    """agentgw status's own client against the registry's uvicorn: the 200 body of an
    HTTP/1.0 GET (the profile list, marked source "registry"); None for a refused caller's
    kind of answer, a path nothing listens on, and malformed or truncated responses."""
    from agentgw.registry.client import get_current, parse_response

    app = create_app(host.layout, lambda: host.config, lambda c: [], Options(ttl=1.0))
    path = tmp_path / "registry.sock"
    with real_server(app, path):
        body = get_current(path, "/v1/profiles")
        assert body is not None
        doc = json.loads(body)
        assert doc["source"] == "registry" and doc["isolation_mode"] == "production"
        assert get_current(path, "/v1/nothing-here") is None  # 404
    assert get_current(path, "/v1/profiles") is None  # nobody listens
    assert get_current(tmp_path / "absent.sock", "/v1/profiles") is None
    assert parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}") == b"{}"
    assert parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}") is None
    assert parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}") is None
    assert parse_response(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\n{}") is None
    assert parse_response(b"garbage") is None
