"""The OnFailure= webhook against a server that answers with a redirect: the event is not
sent on to where the redirect points, and the webhook URL's token (path, query) appears
nowhere in the hook unit's journal; the failure itself is recorded in the history."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.integration.support import ETC, Releases, agentgw, all_promoted, sh

pytestmark = pytest.mark.integration

SABOTAGE = Path("/etc/systemd/system/agent-gateway@mcp.service.d/90-sabotage.conf")


def serve(handler: type[BaseHTTPRequestHandler]) -> HTTPServer:
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    with all_promoted(tmp_path_factory.mktemp("build")) as releases:
        yield releases


def test_a_redirecting_webhook_gets_one_post_and_no_token_is_logged(host: Releases) -> None:
    """mcp fails for good; the hook POSTs to the webhook, which answers 302 to a second
    server: that server receives nothing, the hook's journal names neither the token in the
    path nor the one in the query, and history has the failure."""
    received: list[bytes] = []
    hits: list[str] = []

    class Target(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    target = serve(Target)

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
            hits.append(self.path)
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{target.server_port}/stolen")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    redirect = serve(Redirect)
    url = f"http://127.0.0.1:{redirect.server_port}/hooks/T0KEN-PATH?key=S3CRET-QUERY"
    config = ETC / "agentgw.yaml"
    original = config.read_text()
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        config.write_text(original + f"webhook: '{url}'\n")
        SABOTAGE.write_text("[Service]\nExecStart=\nExecStart=/bin/false\nRestart=no\n")
        sh("systemctl", "daemon-reload")
        sh("systemctl", "restart", "agent-gateway@mcp.service")
        deadline = time.monotonic() + 20
        while not hits and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hits, "the webhook was never called"
        time.sleep(1.0)
        assert received == [], "the redirect was followed"
        journal = sh("journalctl", "-u", "agentgw-onfailure@mcp.service", "--since", since,
                     "--no-pager", "-o", "cat").stdout
        assert "redirect: not followed" in journal, journal[-1500:]
        assert "T0KEN-PATH" not in journal and "S3CRET-QUERY" not in journal
        history = json.loads(agentgw("history", "mcp", "--json").stdout)["records"]
        assert ("failure", "failed") == (history[-1]["action"], history[-1]["result"])
    finally:
        config.write_text(original)
        SABOTAGE.unlink(missing_ok=True)
        sh("systemctl", "daemon-reload")
        sh("systemctl", "reset-failed", "agent-gateway@mcp.service")
        agentgw("restart", "mcp", check=False)
        for server in (target, redirect):
            server.shutdown()
            server.server_close()
