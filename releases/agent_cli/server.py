"""The gateway's HTTP server: a route table, JSON responses, and a drain on SIGTERM.

Routes are plain functions registered on a ``Router`` (see routes.py); the server knows nothing
about what they do. On SIGTERM the server stops accepting, lets in-flight requests finish for up
to the drain time, and returns, so the process exits 0 before systemd's stop timeout.
"""

from __future__ import annotations

import json
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.body or b"null")


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any] | list[Any]
    headers: dict[str, str] = field(default_factory=dict)
    # Sent as is instead of the JSON of body (a broken variant's malformed answer).
    raw: bytes | None = None


Handler = Callable[[Request], Response]


class Router:
    """Method + exact path -> handler; 404 for an unknown path, 405 for a known one."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._routes.setdefault(path, {})[method] = handler

    def dispatch(self, request: Request) -> Response:
        methods = self._routes.get(request.path)
        if methods is None:
            return Response(404, {"error": f"no route {request.path}"})
        handler = methods.get(request.method)
        if handler is None:
            allow = ", ".join(sorted(methods))
            return Response(405, {"error": f"{request.method} not allowed"}, {"Allow": allow})
        return handler(request)


class GatewayServer(ThreadingHTTPServer):
    """One thread per request, with a count of the requests in flight for the drain."""

    daemon_threads = True  # the drain waits for requests itself, with a deadline

    def __init__(self, address: tuple[str, int], router: Router) -> None:
        self.router = router
        self.in_flight = 0
        self.idle = threading.Condition()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name; with egress denied that can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Counted here, in the accept loop, so a connection accepted just before the drain
        # starts is waited for even if its thread has not run yet.
        self._count(+1)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._count(-1)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._count(-1)

    def _count(self, delta: int) -> None:
        with self.idle:
            self.in_flight += delta
            self.idle.notify_all()

    def wait_idle(self, timeout_s: float) -> int:
        """Wait until no request is in flight or the time is up; return how many still are."""
        deadline = time.monotonic() + timeout_s
        with self.idle:
            while self.in_flight and (left := deadline - time.monotonic()) > 0:
                self.idle.wait(left)
            return self.in_flight


class _RequestHandler(BaseHTTPRequestHandler):
    server: GatewayServer
    server_version = "agent_cli"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: health probes every few seconds would flood the journal."""

    def _serve(self, method: str) -> None:
        try:
            response = self._handle(method)
        except Exception as exc:  # a broken route answers 500 instead of dropping the connection
            print(f"agent_cli: {method} {self.path} failed: {exc!r}", file=sys.stderr)
            response = Response(500, {"error": "internal error"})
        self._respond(response)

    def _handle(self, method: str) -> Response:
        length_header = self.headers.get("Content-Length") or "0"
        if not length_header.isdigit():
            return Response(400, {"error": "bad Content-Length"})
        length = int(length_header)
        if length > MAX_BODY:
            return Response(413, {"error": f"body over {MAX_BODY} bytes"})
        body = self.rfile.read(length) if length > 0 else b""
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        return self.server.router.dispatch(Request(method, path, query, headers, body))

    def _respond(self, response: Response) -> None:
        data = response.raw if response.raw is not None else (
            json.dumps(response.body).encode() + b"\n")
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def serve(
    server: GatewayServer,
    *,
    drain_s: float,
    on_ready: Callable[[], object],
    on_stopping: Callable[[], object],
) -> int:
    """Serve until SIGTERM or SIGINT, then drain; returns the requests cut off by the deadline."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    loop.start()
    on_ready()
    stop.wait()
    on_stopping()
    server.shutdown()  # the accept loop ends; then closing the socket refuses new connections
    server.socket.close()
    loop.join()
    left = server.wait_idle(drain_s)
    if left:
        print(
            f"agent_cli: drain time {drain_s:g}s over, {left} request(s) cut off", file=sys.stderr
        )
    return left
