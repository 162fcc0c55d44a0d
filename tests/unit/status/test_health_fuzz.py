"""The health check against a gateway that answers anything: bodies, status codes, broken
status lines, endless headers or body, silence. Every answer becomes a Health with a reason;
nothing raises (a promote past its flip must always reach its rollback)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentgw.observe.health import probe_health

HOST = "127.77.9.2"
Answer = Callable[[socket.socket], None]


@pytest.fixture
def server() -> Iterator[tuple[int, list[Answer]]]:
    """A raw TCP server answering each connection with the next queued behaviour."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(8)
    answers: list[Answer] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(3)
                try:
                    conn.recv(65536)
                    if answers:
                        answers.pop(0)(conn)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], answers
    stop.set()
    sock.close()


def http(status: str, body: bytes, headers: bytes = b"") -> Answer:
    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 " + status.encode() + b"\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n" + headers + b"\r\n" + body)
    return answer


def endless_headers(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for i in range(2000):
        conn.sendall(f"X-{i}: {'a' * 100}\r\n".encode())


def endless_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    for _ in range(400):
        conn.sendall(b"[" * 4096)


def silence(conn: socket.socket) -> None:
    threading.Event().wait(2.5)


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        (http("200 OK", b"[" * 65536), True),
        (http("200 OK", b'{"sha": "\x1b[2J"}'), True),
        (http("500 Oops", b"{}"), False),
        (http("999 What", b""), False),
        (lambda c: c.sendall(b"garbage\r\n\r\n"), False),
        (lambda c: c.sendall(b"HTTP/1.1 200\xff\xfe OK\r\n\r\n"), False),
        (endless_headers, False),
        (endless_body, True),
        (silence, False),
        (lambda c: None, False),
    ],
    ids=["deep-brackets", "escape-sha", "500", "999", "garbage", "bad-bytes",
         "endless-headers", "endless-body", "silence", "closed"],
)
def test_every_answer_is_a_verdict(
    server: tuple[int, list[Answer]], answer: Answer, ok: bool
) -> None:
    """Each behaviour gives ok or not with a printable reason, within the timeout."""
    port, answers = server
    answers.append(answer)
    health = probe_health(HOST, port, "/health", timeout=1.0)
    assert health.ok is ok, health.reason
    assert "\x1b" not in health.reason and "\x1b" not in (health.sha or "")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(status=st.integers(0, 1200), body=st.binary(max_size=3000))
def test_fuzzed_status_and_body_never_raise(
    server: tuple[int, list[Answer]], status: int, body: bytes
) -> None:
    """Any status number and any bytes as the body."""
    port, answers = server
    answers.append(http(f"{status} X", body))
    health = probe_health(HOST, port, "/health", timeout=1.0)
    assert health.ok is (status == 200)
