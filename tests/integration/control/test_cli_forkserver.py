"""The CLI fork server (agentgw-cli.socket) on a real systemd: root's promote, rollback and
history run in its children with the same results, a SIGKILL of the caller kills the command
where it stands (the next command repairs it), and without the server every command runs in a
process of its own."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.control.test_promote import assert_aligned
from tests.integration.support import (
    AGENTGW,
    OPT,
    Releases,
    agentgw,
    current,
    paused_promote,
    setup_host,
    sh,
)

pytestmark = pytest.mark.integration
SOCKET = Path("/run/agentgw/cli.sock")


def server_pid() -> int:
    return int(sh("systemctl", "show", "-P", "MainPID", "agentgw-cli.service",
                  check=True).stdout.strip())


def ran_there() -> list[str]:
    """The commands the fork server ran, from its journal."""
    out = sh("journalctl", "-u", "agentgw-cli.service", "-o", "cat", "--no-pager").stdout
    return [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("pid ")]


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    releases = setup_host(tmp_path_factory.mktemp("build"))
    for p in ("core", "api", "mcp"):
        agentgw("promote", p, releases.a, "--allow-downgrade")
    sh("systemctl", "start", "agentgw-cli.socket", check=True)
    try:
        yield releases
    finally:
        sh("systemctl", "stop", "agentgw-cli.socket", "agentgw-cli.service")


def test_promote_rollback_and_history_run_in_the_fork_server(rel: Releases) -> None:
    before = len(ran_there())
    out = json.loads(agentgw("promote", "api", rel.b, "--json").stdout)
    assert out["result"] == "ok" and out["siblings_unchanged"] is True
    assert_aligned("api", rel.b)
    broken = agentgw("promote", "api", rel.crash, "--json", check=False)
    assert broken.returncode == 1, broken.stderr
    assert json.loads(broken.stdout)["result"] == "rolled_back"
    agentgw("rollback", "api")
    assert_aligned("api", rel.a)
    agentgw("history", "--verify")
    assert ran_there()[before:] == ["agentgw promote", "agentgw promote", "agentgw rollback",
                                    "agentgw history"]
    assert server_pid() > 0
    # the same bytes as in a process of its own
    here = agentgw("history", "--json", env=dict(os.environ, AGENTGW_CLI_FORK="0"))
    assert agentgw("history", "--json").stdout == here.stdout
    bad = agentgw("promote", "no-such-profile", rel.b, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


def test_sigkill_of_the_caller_kills_the_command_and_the_next_repairs(rel: Releases) -> None:
    target = rel.b if current("api").startswith(rel.a) else rel.a
    with paused_promote("api", target, "restarted") as proc:
        (child,) = psutil.Process(server_pid()).children()
        assert child.pid != proc.pid
    child.wait(timeout=10)  # the command died with its caller
    assert (OPT / "gateways/api/current").resolve().is_dir()
    nxt = agentgw("promote", "api", target, "--allow-downgrade")
    assert "recover" in nxt.stdout
    assert_aligned("api", target)
    agentgw("history", "--verify")


def test_without_the_server_commands_run_in_their_own_process(rel: Releases) -> None:
    sh("systemctl", "stop", "agentgw-cli.socket", "agentgw-cli.service", check=True)
    try:
        assert not SOCKET.exists()
        before = len(ran_there())
        assert json.loads(agentgw("status", "--json").stdout)["profiles"]
        agentgw("history", "--verify")
        assert len(ran_there()) == before
    finally:
        sh("systemctl", "start", "agentgw-cli.socket", check=True)


def test_an_admin_members_promote_reaches_it_through_sudo_and_names_the_member(
        rel: Releases) -> None:
    """alice (group agentgw) runs a plain `agentgw promote`: re-run through sudo as root, it
    is handed to the fork server, and the history record's actor is still alice."""
    if sh("id", "alice").returncode != 0:
        sh("useradd", "--no-create-home", "--shell", "/bin/sh", "-G", "agentgw", "alice",
           check=True)
    target = rel.b if current("api").startswith(rel.a) else rel.a
    before = len(ran_there())
    done = sh(AGENTGW, "promote", "api", target, "--allow-downgrade", user="alice", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ran_there()[before:] == ["agentgw promote"]
    last = json.loads(agentgw("history", "api", "--json").stdout)["records"][-1]
    assert (last["action"], last["result"], last["actor"]) == ("promote", "ok", "alice")
    assert_aligned("api", target)
