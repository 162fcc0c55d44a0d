"""From the attacker's side against the registry (its own hardened unit): agent-api sends a
64 KiB header (431), reads its own proof (no sibling paths, addresses or pids), and meets a
broken configuration (503 without the values it quotes, which root still gets); the registry's
own mount namespace cannot read the host key or a release key."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import ETC, KEY, REPO, Releases, agentgw, all_promoted, main_pid, sh

pytestmark = pytest.mark.integration

UNIT = "agentgw-registry.service"
UNIT_FILE = Path("/etc/systemd/system") / UNIT
SOCKET_UNIT = "agentgw-registry.socket"  # the service Requires= it
SOCKET = "/run/agentgw/registry.sock"
CLIENT = r"""
import socket, sys
path, pad = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[3])
try:  # a server that answers 431 and closes before reading the rest: the send breaks
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: r\r\nCache-Control: no-cache\r\nX-Pad: {'a' * pad}"
              "\r\n\r\n".encode())
except (BrokenPipeError, ConnectionResetError):
    pass
data = b""
try:
    while chunk := s.recv(65536):
        data += chunk
except ConnectionResetError:
    pass
head, _, body = data.partition(b"\r\n\r\n")
print(head.split()[1].decode())
sys.stdout.write(body.decode())
"""


def get(user: str | None, path: str, pad: int = 0) -> tuple[int, str]:
    argv = ["/usr/bin/python3", "-I", "-c", CLIENT, path, str(pad), SOCKET]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    out = sh(*argv).stdout
    status, _, body = out.partition("\n")
    return int(status or 0), body


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    with all_promoted(tmp_path_factory.mktemp("build")) as releases:
        shutil.copy(REPO / "systemd" / UNIT, UNIT_FILE)
        shutil.copy(REPO / "systemd" / SOCKET_UNIT, UNIT_FILE.with_name(SOCKET_UNIT))
        sh("systemctl", "daemon-reload")
        sh("systemctl", "restart", UNIT)
        try:
            yield releases
        finally:
            sh("systemctl", "stop", SOCKET_UNIT, UNIT)
            UNIT_FILE.unlink(missing_ok=True)
            UNIT_FILE.with_name(SOCKET_UNIT).unlink(missing_ok=True)
            sh("systemctl", "daemon-reload")


def test_oversized_headers_get_431(host: Releases) -> None:
    """64 KiB of header: 431, nothing served; 8 KiB: 200."""
    assert get("agent-api", "/v1/profiles/api", 64 * 1024)[0] == 431
    assert get("agent-api", "/v1/profiles/api", 8 * 1024)[0] == 200


def test_a_profiles_own_proof_names_no_sibling(host: Releases) -> None:
    """After verify, agent-api's view of its proof holds results and counts, not core's or
    mcp's paths, addresses or MainPIDs; root's is the signed record, which has them."""
    agentgw("verify", "api", check=False)
    status, body = get("agent-api", "/v1/profiles/api/proofs")
    assert status == 200, body
    view = json.loads(body)
    assert view["profile"] == "api" and view["checks"]
    core_pid, _ = main_pid("core")
    for detail in ("/opt/agent/gateways/core", "127.77.0.2", "/opt/agent/gateways/mcp",
                   f'"pid": {core_pid}', "signature"):
        assert detail not in body, detail
    status, full = get(None, "/v1/profiles/api/proofs")
    assert status == 200 and "/opt/agent/gateways/core" in full


def test_a_broken_config_is_not_quoted_to_a_profile(host: Releases) -> None:
    """A profile file with a mistake that quotes a value: agent-api gets 503 without it, root
    gets the error."""
    bad = ETC / "gateways" / "zzz.yaml"
    bad.write_text("mode: cli\nlisten: 127.77.0.9:8080\nenv:\n  PYTHONSTARTUP: SECRET_VALUE_42\n")
    try:
        status, body = get("agent-api", "/v1/profiles")
        assert status == 503 and "SECRET_VALUE_42" not in body and "PYTHONSTARTUP" not in body
        status, body = get(None, "/v1/profiles")
        assert "PYTHONSTARTUP" in body
    finally:
        bad.unlink()


def test_the_registry_cannot_read_private_keys(host: Releases) -> None:
    """In the registry unit's mount namespace, as its root with its capabilities, the host's
    proof key and the release signing key are out of reach."""
    agentgw("verify", "core", check=False)  # makes the host key if there is none
    pid = int(sh("systemctl", "show", "-P", "MainPID", UNIT).stdout)
    assert pid > 0
    for key in ("/var/lib/agentgw/keys/host.key", str(KEY)):
        assert Path(key).exists(), key
        done = sh("nsenter", "-t", str(pid), "-m", "cat", key)
        assert done.returncode != 0, f"{key} readable in the registry's namespace"
