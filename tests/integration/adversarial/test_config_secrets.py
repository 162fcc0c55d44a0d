"""From inside api's gateway (its mount namespace, its user), agentgw's own configuration,
state and keys are out of reach; verify sees a host where they are not; a credential file
others can read is refused before anything is applied."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import ETC, Releases, agentgw, all_promoted, main_pid, sh

pytestmark = pytest.mark.integration

TARGETS = [
    "/etc/agentgw/gateways/core.yaml",
    "/etc/agentgw/agentgw.yaml",
    "/etc/agentgw/secrets/core/chat-token",
    "/etc/agentgw/keys/release-signing.key",
    "/var/lib/agentgw/history.jsonl",
]
SABOTAGE = Path("/etc/systemd/system/agent-gateway@api.service.d/90-sabotage.conf")


def in_gateway(profile: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the gateway's mount namespace as its user."""
    pid, _ = main_pid(profile)
    uid = sh("id", "-u", f"agent-{profile}").stdout.strip()
    return sh("nsenter", "-t", str(pid), "-m", "-S", uid, "-G", uid, *argv)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    with all_promoted(tmp_path_factory.mktemp("build")) as releases:
        yield releases


def test_the_gateway_reads_none_of_agentgws_files(host: Releases) -> None:
    """Each file exists and root reads it; from inside api's gateway, as agent-api, it
    cannot be read."""
    for target in TARGETS:
        assert Path(target).exists(), target
        done = in_gateway("api", "cat", target)
        assert done.returncode != 0, f"{target} readable from api's gateway"
        assert "Permission denied" in done.stderr or "No such file" in done.stderr


def test_verify_reports_not_isolated_when_a_sibling_profile_is_readable(host: Releases) -> None:
    """With the template's InaccessiblePaths= undone for api, core's profile file is readable
    from api's sandbox: verify says not isolated and names it; put back, isolated again."""
    ok = agentgw("verify", "api", "--json", check=False)
    assert ok.returncode == 0, ok.stdout[-2000:]
    SABOTAGE.write_text("[Service]\nInaccessiblePaths=\n")
    sh("systemctl", "daemon-reload")
    try:
        agentgw("restart", "api")
        bad = agentgw("verify", "api", "--json", check=False)
        assert bad.returncode == 3
        (record,) = json.loads(bad.stdout)["proofs"]
        cross = next(c for c in record["checks"] if c["name"] == "cross-profile-read")
        assert cross["result"] == "failed"
        assert "/etc/agentgw/gateways/core.yaml" in cross["reason"]
    finally:
        SABOTAGE.unlink(missing_ok=True)
        sh("systemctl", "daemon-reload")
        agentgw("restart", "api", check=False)
    assert agentgw("verify", "api", check=False).returncode == 0


def test_a_credential_others_can_read_is_refused_and_nothing_is_applied(host: Releases) -> None:
    """chmod 0644 on core's secret: config check and apply exit 2 with the fix; the env
    files and drop-ins stay as they were."""
    secret = ETC / "secrets" / "core" / "chat-token"
    env = Path("/opt/agent/gateways/core/env")
    before = (env.read_bytes(), env.stat().st_mtime_ns)
    secret.chmod(0o644)
    try:
        for args in (("config", "check"), ("apply",)):
            proc = agentgw(*args, check=False)
            assert proc.returncode == 2, proc.stdout + proc.stderr
            assert "is readable by more than root" in proc.stderr
            assert f"chmod 0600 {secret}" in proc.stderr
        assert (env.read_bytes(), env.stat().st_mtime_ns) == before
    finally:
        secret.chmod(0o600)
    assert agentgw("config", "check").returncode == 0
