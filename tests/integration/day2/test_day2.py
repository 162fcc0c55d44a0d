"""Day-2 without root, journald-native logs and promtool, on a real systemd, polkit and sudo
(inside the lab). The admin group, the polkit rule and the sudoers rule are the ones
``agentgw init`` installed; alice is in the group, bob is not. Commands run as them with
setpriv (their own uid and groups), so sudo's and polkit's answers are real."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import AGENTGW, Releases, agentgw, main_pid, setup_host, sh

pytestmark = pytest.mark.integration

PROFILE = "api"
UNIT = f"agent-gateway@{PROFILE}.service"
# A stand-in for the host's ssh.service (the lab has none): a unit members must not restart.
SSH_UNIT = Path("/etc/systemd/system/ssh.service")
PROMTOOL = "/var/cache/agentgw/promtool/root/usr/bin/promtool"
REGISTRY = "agentgw-registry.service"
SOCKET = "/run/agentgw/registry.sock"
GET = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(f"GET {sys.argv[2]} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.write(data.partition(b"\r\n\r\n")[2].decode())
"""


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    """The lab host with api on release A; alice (group agentgw) and bob (no group); the
    ssh stand-in running."""
    built = setup_host(tmp_path_factory.mktemp("build"))
    agentgw("promote", PROFILE, built.a, "--allow-downgrade")
    for user, groups in (("alice", ["-G", "agentgw"]), ("bob", [])):
        if sh("id", user).returncode != 0:
            sh("useradd", "--no-create-home", "--shell", "/bin/sh", *groups, user, check=True)
    SSH_UNIT.write_text("[Service]\nExecStart=/bin/sleep infinity\n")
    sh("systemctl", "daemon-reload", check=True)
    sh("systemctl", "start", SSH_UNIT.name, check=True)
    try:
        yield built
    finally:
        sh("systemctl", "stop", SSH_UNIT.name)
        SSH_UNIT.unlink(missing_ok=True)
        sh("systemctl", "daemon-reload")


def history(profile: str) -> list[dict[str, object]]:
    records = json.loads(agentgw("history", profile, "--json").stdout)["records"]
    assert isinstance(records, list)
    return records


def test_init_made_the_group_and_rules(releases: Releases) -> None:
    """init created the group; the rules are installed root-owned (sudoers 0440) and visudo
    accepts the host's sudoers with ours included."""
    assert sh("getent", "group", "agentgw").returncode == 0
    assert oct(Path("/etc/sudoers.d/agentgw").stat().st_mode & 0o777) == "0o440"
    assert Path("/etc/polkit-1/rules.d/50-agentgw.rules").stat().st_uid == 0
    check = sh("visudo", "-c")
    assert check.returncode == 0, check.stdout + check.stderr


def test_member_acts_and_reads_and_is_recorded(releases: Releases) -> None:
    """alice's plain `agentgw promote api SHA`, `rollback api` and `restart api` run (through
    sudo); each history record names alice (text and --json) and the chain stays intact; she
    reads status, history, logs and verify."""
    try:
        for argv in (["promote", PROFILE, releases.b], ["rollback", PROFILE],
                     ["restart", PROFILE]):
            done = sh(AGENTGW, *argv, user="alice", timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        last = history(PROFILE)[-3:]
        assert [(r["action"], r["result"], r["actor"]) for r in last] == [
            ("promote", "ok", "alice"), ("rollback", "ok", "alice"), ("restart", "ok", "alice")]
        text = sh(AGENTGW, "history", PROFILE, user="alice", check=True).stdout
        assert text.splitlines()[-3].split()[2:5] == ["alice", "promote", PROFILE]
        agentgw("history", "--verify")
        status = sh(AGENTGW, "status", PROFILE, "--json", user="alice", check=True).stdout
        row = json.loads(status)["profiles"][0]
        assert (row["profile"], row["release"]["sha"]) == (PROFILE, releases.a)
        logs = sh(AGENTGW, "logs", PROFILE, "-n", "5", "--no-pager", user="alice")
        assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
        proofs = sh(AGENTGW, "verify", PROFILE, user="alice", timeout=120)
        assert proofs.returncode == 0, proofs.stdout + proofs.stderr
    finally:
        agentgw("promote", PROFILE, releases.a, "--allow-downgrade", "--unless-current")


def test_member_restarts_the_gateway_unit_only(releases: Releases) -> None:
    """polkit lets alice restart agent-gateway@api (a new MainPID) and nothing else: the ssh
    stand-in keeps its MainPID; `agentgw apply` is refused by agentgw (exit 2), and by sudo
    itself when asked directly, as is a promote with --etc."""
    before = main_pid(PROFILE)
    done = sh("systemctl", "restart", UNIT, user="alice", timeout=60)
    assert done.returncode == 0, done.stderr
    assert main_pid(PROFILE) != before
    ssh_pid = sh("systemctl", "show", "-P", "MainPID", SSH_UNIT.name, check=True).stdout
    refused = sh("systemctl", "restart", SSH_UNIT.name, user="alice", timeout=60)
    assert refused.returncode != 0
    assert "Access denied" in refused.stderr or "authentication required" in refused.stderr
    assert sh("systemctl", "show", "-P", "MainPID", SSH_UNIT.name).stdout == ssh_pid
    apply = sh(AGENTGW, "apply", user="alice")
    assert apply.returncode == 2
    assert apply.stderr.splitlines()[0] == "error: agentgw apply needs root"
    for argv in (["apply"], ["promote", PROFILE, releases.b, "--etc", "/tmp"]):
        direct = sh("sudo", "-n", AGENTGW, *argv, user="alice")
        assert direct.returncode == 1 and "password is required" in direct.stderr, direct


def test_outsider_is_refused(releases: Releases) -> None:
    """bob: agentgw's day-2 commands say why in one line (exit 2); sudo and polkit refuse
    him too, and the gateway keeps its MainPID."""
    before = main_pid(PROFILE)
    for argv in (["status"], ["history"], ["promote", PROFILE, releases.b]):
        out = sh(AGENTGW, *argv, user="bob")
        assert out.returncode == 2, out
        assert out.stderr.splitlines()[0] == (
            f"error: agentgw {argv[0]} needs root or membership of group agentgw")
    assert sh("sudo", "-n", AGENTGW, "status", user="bob").returncode == 1
    assert sh("systemctl", "restart", UNIT, user="bob", timeout=60).returncode != 0
    assert main_pid(PROFILE) == before


def test_journal_native_fields(releases: Releases) -> None:
    """A promote run as a unit (stderr is the journal) leaves one info entry with PRIORITY
    and AGENTGW_* fields, without --debug."""
    unit = f"agentgw-day2-{int(time.time())}"
    sh("systemd-run", "--wait", "--quiet", f"--unit={unit}", AGENTGW, "promote", PROFILE,
       releases.a, "--allow-downgrade", check=True, timeout=120)
    entries: list[dict[str, str]] = []
    for _ in range(20):
        out = sh("journalctl", "-o", "json", "--no-pager", f"_SYSTEMD_UNIT={unit}.service",
                 "SYSLOG_IDENTIFIER=agentgw", check=True).stdout
        entries = [json.loads(line) for line in out.splitlines()]
        if entries:
            break
        time.sleep(0.25)
    summary = [e for e in entries if e.get("AGENTGW_EVENT") == "promote_finished"]
    assert len(summary) == 1, entries
    (entry,) = summary
    assert entry["PRIORITY"] == "6"
    assert entry["AGENTGW_PROFILE"] == PROFILE and entry["AGENTGW_RESULT"] == "ok"
    assert entry["AGENTGW_RELEASE"].startswith(releases.a)
    assert entry["MESSAGE"].startswith(f"promote_finished profile={PROFILE}")


def test_promtool_checks_metrics(releases: Releases) -> None:
    """promtool check metrics passes on the registry's /metrics (api's series present)."""
    sh("systemctl", "start", REGISTRY, check=True, timeout=60)
    try:
        text = sh("/usr/bin/python3", "-I", "-c", GET, SOCKET, "/metrics", check=True).stdout
    finally:
        sh("systemctl", "stop", REGISTRY)
    assert f'profile="{PROFILE}"' in text and "agentgw_build_info" in text, text[:2000]
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
