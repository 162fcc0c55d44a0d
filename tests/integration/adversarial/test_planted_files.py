"""From the attacker's side: agent-api, holding api's gateway, replaces the launch record root
reads (``logs/launch.json``) with a FIFO, a symlink to /dev/zero, brackets nested 1e5 deep
(refused by size) or 6e4 deep (by depth), or text with terminal escapes. `agentgw status` still
answers within 2 s, the registry answers for core at once, `verify core` passes, api shows the
reason, no escape reaches the terminal, and core keeps running untouched."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import OPT, REPO, Releases, agentgw, all_promoted, main_pid, sh

pytestmark = pytest.mark.integration

UNIT = "agentgw-registry.service"
UNIT_FILE = Path("/etc/systemd/system") / UNIT
SOCKET_UNIT = "agentgw-registry.socket"  # the service Requires= it
SOCKET = "/run/agentgw/registry.sock"
LAUNCH = OPT / "gateways" / "api" / "logs" / "launch.json"

# Run as agent-api: put the planted thing in place of launch.json (rename over it).
PLANT = r"""
import os, sys
kind, target, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
tmp = target + ".planted"
if kind == "fifo":
    os.mkfifo(tmp)
elif kind == "devzero":
    os.symlink("/dev/zero", tmp)
elif kind == "nested":
    open(tmp, "w").write("[" * 60_000)
elif kind == "nested-1e5":
    open(tmp, "w").write("[" * 100_000)
elif kind == "escapes":
    text = '{"pid": %d, "runtime": "\\u001b[2J\\u001b]0;owned\\u0007", "sha": "x"}'
    open(tmp, "w").write(text % pid)
os.replace(tmp, target)
"""

ATTACKS = {
    "fifo": "is a fifo, not a regular file",
    "devzero": "is a symlink (not followed)",
    "nested": "JSON nested too deeply",
    "nested-1e5": "is 100000 bytes, more than the 65536 allowed",
    "escapes": "started on ?[2J?]0;owned?; current now points at",
}


def plant(kind: str) -> None:
    done = sh("setpriv", "--reuid=agent-api", "--regid=agent-api", "--clear-groups",
              "/usr/bin/python3", "-I", "-c", PLANT, kind, str(LAUNCH), str(main_pid("api")[0]),
              timeout=30)
    assert done.returncode == 0, done.stderr


def registry_get(path: str) -> tuple[int, float]:
    client = (
        "import socket,sys;s=socket.socket(socket.AF_UNIX);s.settimeout(5);"
        f"s.connect({SOCKET!r});"
        f"s.sendall(b'GET {path} HTTP/1.0\\r\\nHost: r\\r\\nCache-Control: no-cache\\r\\n\\r\\n');"
        "d=b''\nwhile (c:=s.recv(65536)): d+=c\nprint(d.split()[1].decode())"
    )
    t0 = time.monotonic()
    done = sh("/usr/bin/python3", "-I", "-c", client, timeout=10)
    return int(done.stdout.strip() or 0), time.monotonic() - t0


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    with all_promoted(tmp_path_factory.mktemp("build")) as releases:
        shutil.copy(REPO / "systemd" / UNIT, UNIT_FILE)
        shutil.copy(REPO / "systemd" / SOCKET_UNIT, UNIT_FILE.with_name(SOCKET_UNIT))
        sh("systemctl", "daemon-reload", timeout=30)
        sh("systemctl", "start", UNIT, timeout=30)
        try:
            yield releases
        finally:
            sh("systemctl", "stop", SOCKET_UNIT, UNIT, timeout=30)
            UNIT_FILE.unlink(missing_ok=True)
            UNIT_FILE.with_name(SOCKET_UNIT).unlink(missing_ok=True)
            sh("systemctl", "daemon-reload", timeout=30)
            agentgw("restart", "api", check=False)


@pytest.mark.parametrize("kind", sorted(ATTACKS))
def test_a_planted_launch_record_delays_and_fails_no_one(host: Releases, kind: str) -> None:
    """Each planted file: status within 2 s (registry and direct), api not aligned with the
    reason, core aligned, the registry answers core at once, verify core passes, no escape
    character in any output, core's MainPID unchanged."""
    core_before = main_pid("core")
    plant(kind)
    try:
        for extra in ([], ["--etc", "/etc/agentgw"]):  # through the registry, then direct
            t0 = time.monotonic()
            proc = agentgw("status", "--json", *extra, check=False)
            took = time.monotonic() - t0
            assert took < 2.0, f"status took {took:.1f}s"
            rows = {r["profile"]: r for r in json.loads(proc.stdout)["profiles"]}
            assert ATTACKS[kind] in rows["api"]["aligned"]["reason"], rows["api"]["aligned"]
            assert rows["api"]["aligned"]["state"] in ("unknown", "no")
            assert rows["core"]["aligned"]["state"] == "yes"
            assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
        table = agentgw("status", check=False)
        assert "\x1b" not in table.stdout and "api: aligned" in table.stdout
        status, took = registry_get("/v1/profiles/core")
        assert status == 200 and took < 1.0, (status, took)
        verify = agentgw("verify", "core", check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert main_pid("core") == core_before
    finally:
        LAUNCH.unlink(missing_ok=True)
