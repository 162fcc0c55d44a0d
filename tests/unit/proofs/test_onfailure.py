"""The OnFailure= hook records a gateway's failure in history and POSTs it to the webhook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentgw.apply.history import read_history, verify_history
from agentgw.config.load import Config, load_config
from agentgw.errors import AgentgwError
from agentgw.paths import Layout
from agentgw.proofs.onfailure import failure_event, record_failure

MONITOR = {
    "MONITOR_UNIT": "agent-gateway@api.service",
    "MONITOR_SERVICE_RESULT": "exit-code",
    "MONITOR_EXIT_CODE": "exited",
    "MONITOR_EXIT_STATUS": "78",
    "MONITOR_INVOCATION_ID": "0123abcd",
}


def config(tmp_path: Path, host_yaml: str) -> Config:
    etc = tmp_path / "etc"
    (etc / "gateways").mkdir(parents=True)
    (etc / "agentgw.yaml").write_text(host_yaml)
    (etc / "gateways" / "api.yaml").write_text("mode: cli\nlisten: 127.77.0.3:8080\n")
    return load_config(etc)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP server that keeps the JSON bodies POSTed to it."""
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
            length = int(self.headers["Content-Length"])
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_event_carries_what_systemd_passed() -> None:
    """MONITOR_* become the event's unit, result, exit code/status and invocation."""
    event = failure_event("api", MONITOR, now=0.0, hostname="h")
    assert {
        "event": "gateway_failed", "profile": "api", "host": "h", "time": "1970-01-01T00:00:00Z",
        "unit": "agent-gateway@api.service", "service_result": "exit-code",
        "exit_code": "exited", "exit_status": "78", "invocation_id": "0123abcd",
    } == event


def test_failure_goes_to_history_and_the_webhook(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    """One chained history record (action failure) and one POST with the same facts."""
    url, bodies = webhook
    layout = Layout(tmp_path)
    event = record_failure(layout, config(tmp_path, f"webhook: {url}\n"), "api", MONITOR)
    assert 204 == event["webhook_status"]
    [record] = read_history(layout.history, "api")
    assert ("failure", "failed", "exit-code", "78") == (
        record.action, record.result, record.detail["service_result"],
        record.detail["exit_status"])
    assert [] == verify_history(layout.history)
    [body] = bodies
    assert ("gateway_failed", "api", "agent-gateway@api.service") == (
        body["event"], body["profile"], body["unit"])


def test_an_unreachable_webhook_fails_after_the_failure_is_recorded(tmp_path: Path) -> None:
    """The history is written first: a webhook that is down loses nothing, and says so."""
    layout = Layout(tmp_path)
    cfg = config(tmp_path, "webhook: http://127.0.0.1:9/none\n")
    with pytest.raises(AgentgwError, match="webhook http://127.0.0.1:9/... failed"):
        record_failure(layout, cfg, "api", {})
    [record] = read_history(layout.history, "api")
    assert "agent-gateway@api.service" == record.detail["unit"]


@pytest.mark.parametrize("bad", ["ftp://example.com/x", "example.com", "http://"])
def test_webhook_must_be_an_http_url(tmp_path: Path, bad: str) -> None:
    """Only http(s) URLs with a host are accepted (the hook POSTs nowhere else)."""
    with pytest.raises(AgentgwError, match="is not an http\\(s\\) URL"):
        config(tmp_path, f"webhook: '{bad}'\n")


def test_a_redirect_is_not_followed_and_the_token_is_never_printed(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    """A webhook that answers 302 to another server: nothing reaches that server, the error
    says why, and neither the path nor the query (where tokens live) is in the message."""
    target, bodies = webhook

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/hooks/T0KEN?key=S3CRET"
    try:
        cfg = config(tmp_path, f"webhook: '{url}'\n")
        with pytest.raises(AgentgwError) as info:
            record_failure(Layout(tmp_path), cfg, "api", MONITOR)
    finally:
        server.shutdown()
        server.server_close()
    assert bodies == []
    assert "answered 302 (a redirect: not followed)" in info.value.message
    for secret in ("T0KEN", "S3CRET"):
        assert secret not in info.value.message
