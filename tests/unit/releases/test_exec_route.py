"""The demo runtime's POST /exec: a job goes to the sandbox broker, never runs in the gateway."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.unit.releases.conftest import REPO, Host, Notifications
from tests.unit.sandbox.brokers import served


def install_client(host: Host) -> None:
    """As agentgw init does: the client at <opt>/_lib/agentgw_sandbox.py."""
    lib = host.opt / "_lib"
    lib.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "launcher" / "sandbox_client.py", lib / "agentgw_sandbox.py")


def test_exec_runs_through_the_broker(
    host: Host, notifications: Notifications, tmp_path: Path
) -> None:
    """POST /exec {argv, stdin} answers with the job's exit code and output as text, from
    the broker (the fake job echoes stdin and exits with len(argv))."""
    install_client(host)
    api = host.promote("api")
    with served(tmp_path) as srv:
        gateway = host.start(api, notifications,
                             AGENTGW_SANDBOX_SOCKET=str(srv.sockets["api"]))
        status, body = gateway.request("POST", "/exec",
                                       {"argv": ["sh", "-c", "x"], "stdin": "héllo"})
        assert gateway.stop()[0] == 0
    assert status == 200
    assert (body["exit_code"], body["stdout"], body["backend"]) == (3, "héllo", "tcg")
    assert [r["profile"] for r in srv.records_lines()] == ["api"]


def test_exec_rejects_bad_bodies_and_reports_a_missing_broker(
    host: Host, notifications: Notifications, tmp_path: Path
) -> None:
    """A body without a list argv is 400; with no broker to ask the answer is 503
    'unreachable' (nothing runs in the gateway instead)."""
    install_client(host)
    api = host.promote("api")
    gateway = host.start(api, notifications,
                         AGENTGW_SANDBOX_SOCKET=str(tmp_path / "absent.sock"))
    assert gateway.request("POST", "/exec", {"argv": "echo hi"})[0] == 400
    assert gateway.request("POST", "/exec", {"argv": ["true"], "env": {}})[0] == 400
    status, body = gateway.request("POST", "/exec", {"argv": ["true"]})
    assert (status, body["error"]) == (503, "unreachable")
    assert gateway.stop()[0] == 0
