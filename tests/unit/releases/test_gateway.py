"""The demo runtime's gateway: health, readiness, state in AGENT_HOME, drain, and the variants."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from tests.unit.releases.conftest import Host, Notifications, start_time


def test_health_reports_profile_release_and_pid(host: Host, notifications: Notifications) -> None:
    """/health and the profile's own health path answer with its profile, the release's
    manifest sha and label, and the serving pid; unknown routes are 404, wrong methods 405."""
    api = host.promote("api")
    gateway = host.start(api, notifications, "--replace")
    expected = {
        "status": "ok",
        "profile": "api",
        "sha": api.sha,
        "label": "good",
        "pid": gateway.proc.pid,
    }
    assert gateway.get("/health") == (200, expected)
    assert gateway.get("/v1/health") == (200, expected)
    assert gateway.get("/nope") == (404, {"error": "no route /nope"})
    assert gateway.request("POST", "/health", {}) == (405, {"error": "POST not allowed"})
    assert gateway.stop()[0] == 0


def test_ready_is_notified_once_listening(host: Host, notifications: Notifications) -> None:
    """READY=1 (with a STATUS naming profile and sha) arrives when the port already answers."""
    api = host.promote("api")
    gateway = host.start(api, notifications)
    assert gateway.ready.splitlines() == [
        "READY=1",
        f"STATUS=serving profile=api sha={api.sha} variant=good on 127.0.0.1:{api.port}",
    ]
    assert gateway.get("/health")[0] == 200
    gateway.proc.send_signal(signal.SIGTERM)
    assert notifications.next() == "STOPPING=1"
    assert gateway.proc.wait(timeout=10) == 0


def test_ready_reaches_an_abstract_notify_socket(host: Host) -> None:
    """NOTIFY_SOCKET=@name (systemd's abstract socket form) is honoured."""
    name = f"agentgw-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        api = host.promote("api")
        gateway = host.start(api, Notifications(sock, "@" + name))
        assert gateway.ready.startswith("READY=1\n")
        assert gateway.stop()[0] == 0


def test_pidfile_identifies_the_instance_and_goes_with_it(
    host: Host, notifications: Notifications
) -> None:
    """AGENT_HOME/gateway.pid holds pid, start time, home and profile; a clean exit removes it."""
    api = host.promote("api")
    gateway = host.start(api, notifications)
    pidfile = api.home / "gateway.pid"
    assert json.loads(pidfile.read_text()) == {
        "pid": gateway.proc.pid,
        "start_time": start_time(gateway.proc.pid),
        "home": str(api.home),
        "profile": "api",
    }
    assert gateway.stop()[0] == 0
    assert list(api.home.iterdir()) == []


def open_partial_request(port: int) -> socket.socket:
    """A request whose headers are not finished: the server holds it in flight until they are."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(b"GET /health HTTP/1.0\r\nHost: x\r\n")
    return conn


def wait_refused(port: int) -> None:
    """Until a connection is refused (or reset from the closing listener's backlog)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):
            return
        time.sleep(0.05)
    pytest.fail("the gateway kept accepting connections after SIGTERM")


def test_sigterm_drains_in_flight_requests(host: Host, notifications: Notifications) -> None:
    """After SIGTERM new connections are refused, the request in flight still completes, and
    the process exits 0."""
    api = host.promote("api")
    gateway = host.start(api, notifications)
    with open_partial_request(api.port) as conn:
        time.sleep(0.2)
        gateway.proc.send_signal(signal.SIGTERM)
        assert notifications.next() == "STOPPING=1"
        wait_refused(api.port)
        assert gateway.proc.poll() is None
        conn.sendall(b"\r\n")
        response = conn.makefile("rb").read()
    assert response.startswith(b"HTTP/1.0 200 OK\r\n")
    assert json.loads(response.split(b"\r\n\r\n", 1)[1])["status"] == "ok"
    assert gateway.proc.wait(timeout=10) == 0


def test_drain_stops_waiting_at_the_drain_time(host: Host, notifications: Notifications) -> None:
    """A request that never finishes holds the exit only for AGENT_DRAIN_S, then exit 0."""
    api = host.promote("api", drain_s=1)
    gateway = host.start(api, notifications)
    with open_partial_request(api.port):
        time.sleep(0.2)
        started = time.monotonic()
        code, err = gateway.stop()
        elapsed = time.monotonic() - started
    assert code == 0
    assert 1.0 <= elapsed < 3.0
    assert "agent_cli: drain time 1s over, 1 request(s) cut off" in err


def test_crash_variant_exits_1_at_start(host: Host, notifications: Notifications) -> None:
    """The crash build exits 1 before listening, notifying nothing and writing no pidfile."""
    api = host.promote("api", "crash")
    gateway = host.start(api, notifications, wait_ready=False)
    _, err = gateway.proc.communicate(timeout=10)
    assert gateway.proc.returncode == 1
    assert err == f"agent_cli: crash variant of {api.sha}: exiting 1 at start\n"
    with pytest.raises(TimeoutError):
        notifications.next(timeout_s=0.2)
    assert list(api.home.iterdir()) == []


def test_unhealthy_variant_is_ready_but_never_healthy(
    host: Host, notifications: Notifications
) -> None:
    """The unhealthy build still notifies READY=1, and /health answers 503 unhealthy."""
    api = host.promote("api", "unhealthy")
    gateway = host.start(api, notifications)
    assert gateway.ready.startswith("READY=1\n")
    for _ in range(3):
        status, body = gateway.get("/health")
        assert (status, body["status"]) == (503, "unhealthy")
    assert gateway.stop()[0] == 0


def test_wrongsha_variant_reports_another_sha(host: Host, notifications: Notifications) -> None:
    """The wrongsha build is healthy but reports a sha that is not its manifest's."""
    api = host.promote("api", "wrongsha")
    gateway = host.start(api, notifications)
    status, body = gateway.get("/health")
    assert (status, body["status"]) == (200, "ok")
    assert body["sha"] != api.sha
    assert body["sha"] == "0" * len(api.sha)
    assert gateway.stop()[0] == 0


def test_misconfigured_environment_exits_78(host: Host, notifications: Notifications) -> None:
    """A missing listen address is a configuration error systemd must not restart (78)."""
    api = host.promote("api")
    gateway = host.start(api, notifications, wait_ready=False, AGENT_LISTEN="nowhere")
    _, err = gateway.proc.communicate(timeout=10)
    assert gateway.proc.returncode == 78
    assert err == "agent_cli: error: AGENT_LISTEN: 'nowhere' is not host:port\n"


def raw_request(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head)
        return conn.makefile("rb").read()


def test_bad_bodies_are_refused_not_crashed_on(host: Host, notifications: Notifications) -> None:
    """A malformed Content-Length is 400 and an oversized body 413; the gateway keeps serving."""
    api = host.promote("api")
    gateway = host.start(api, notifications)
    bad = raw_request(api.port, b"POST /health HTTP/1.0\r\nContent-Length: x\r\n\r\n")
    big = raw_request(api.port, b"POST /health HTTP/1.0\r\nContent-Length: 99999999\r\n\r\n")
    assert bad.startswith(b"HTTP/1.0 400 ")
    assert big.startswith(b"HTTP/1.0 413 ")
    assert gateway.get("/health")[0] == 200
    assert gateway.stop()[0] == 0
