"""The health waiter (launcher/ready.py, ExecStartPost= of readiness: health), run as its own
process against a real HTTP server on a loopback address: it returns 0 once the health check
answers 200 and records why not otherwise."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
WAITER = REPO / "launcher" / "ready.py"
HOST = "127.77.9.1"


class Server(http.server.ThreadingHTTPServer):
    status = 200
    hits = 0


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.hits += 1
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server((HOST, 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def wait(tmp_path: Path, port: int, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = {"AGENT_LISTEN": f"{HOST}:{port}", "AGENT_HEALTH_PATH": "/health",
           "AGENT_LOGS": str(tmp_path), "AGENT_PROFILE": "web"}
    done = subprocess.run(["/usr/bin/python3", str(WAITER), *args], env=env, text=True,
                          capture_output=True, timeout=30, check=False)
    record = tmp_path / "ready.json"
    return done, json.loads(record.read_text()) if record.exists() else {}


def test_healthy_answer_exits_0_and_records_it(tmp_path: Path, server: Server) -> None:
    """200 on the first try: exit 0, one line in the journal, result healthy in ready.json."""
    done, record = wait(tmp_path, server.server_address[1], "--timeout", "5")
    assert done.returncode == 0
    assert done.stderr.startswith(f"agentgw-ready: healthy: GET http://{HOST}:")
    assert (record["result"], record["attempts"], record["last_error"]) == ("healthy", 1, "")


def test_non_200_until_the_deadline_exits_1_with_the_last_answer(
    tmp_path: Path, server: Server
) -> None:
    """503 every time: it keeps asking until --timeout, then exits 1 naming the last answer."""
    server.status = 503
    done, record = wait(tmp_path, server.server_address[1], "--timeout", "1")
    assert done.returncode == 1
    assert record["result"] == "timeout"
    assert record["last_error"] == "answered 503 Service Unavailable"
    assert server.hits >= 3
    assert "never answered 200 within" in done.stderr


def test_nothing_listening_is_reported_as_such(tmp_path: Path, server: Server) -> None:
    """No server on the port: the recorded error is the connection's."""
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    done, record = wait(tmp_path, port, "--timeout", "0.5")
    assert done.returncode == 1
    assert record["last_error"] == "connection refused"


@pytest.mark.parametrize("args", [["--timeout", "x"], ["--timeout", "0"], ["--bogus"]])
def test_bad_options_exit_2(tmp_path: Path, args: list[str]) -> None:
    """Bad options: one error line, exit 2, no record."""
    done, record = wait(tmp_path, 1, *args)
    assert (done.returncode, record) == (2, {})
    assert done.stderr.startswith("agentgw-ready: error: ")


def test_the_first_probes_come_quickly_then_every_poll_s() -> None:
    """10 ms after the first failed probe, doubling up to 0.2 s: a gateway up soon after its
    exec is not held to a 0.2 s tick."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("agentgw_ready", WAITER)
    assert spec is not None and spec.loader is not None
    ready = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ready)
    pauses = [ready.poll_pause(n) for n in range(1, 8)]
    assert pauses == [0.01, 0.02, 0.04, 0.08, 0.16, 0.2, 0.2]
    assert ready.poll_pause(10_000) == 0.2
