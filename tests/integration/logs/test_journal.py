"""Each profile logs to a journal of its own (LogNamespace=agentgw-<profile>): its output is
there and not in the journal every other unit shares, ``agentgw logs`` reads it, its journald
runs with the profile's limits, and journald holds it to the profile's size cap."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.support import (
    ETC,
    KEY,
    OPT,
    REPO,
    Releases,
    agentgw,
    all_promoted,
    main_pid,
    sh,
)

pytestmark = pytest.mark.integration

PROFILE = "mcp"
UNIT = f"agent-gateway@{PROFILE}.service"
JOURNALD = f"systemd-journald@agentgw-{PROFILE}.service"
CAP_MIB = 8


def show(unit: str, prop: str) -> str:
    return sh("systemctl", "show", "-P", prop, unit, check=True).stdout.strip()


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Releases, Path]]:
    path = tmp_path_factory.mktemp("build")
    with all_promoted(path) as releases:
        yield releases, path


def test_output_goes_to_the_profiles_own_journal(build: tuple[Releases, Path]) -> None:
    """The launcher's banner is in the profile's journal (read with agentgw logs), not in the
    shared one; its journald runs with the logs' CPU quota."""
    assert show(UNIT, "LogNamespace") == f"agentgw-{PROFILE}"
    releases, _ = build
    assert main_pid(PROFILE)[0] > 0
    own = agentgw("logs", PROFILE, "-o", "cat", "--no-pager").stdout
    banner = [line for line in own.splitlines() if line.startswith("agentgw-launch ")]
    assert banner and f"sha={releases.a}" in banner[-1], own[-2000:]
    shared = sh("journalctl", "-u", UNIT, "-o", "cat", "--no-pager", check=True).stdout
    assert not [line for line in shared.splitlines() if line.startswith("agentgw-launch ")]
    assert show(JOURNALD, "ActiveState") == "active"
    assert show(JOURNALD, "CPUQuotaPerSecUSec") == "250ms"  # logs.cpu_quota: 25%


def journal_bytes() -> int:
    """Bytes of the profile's journal files on disk."""
    machine = Path("/etc/machine-id").read_text().strip()
    root = Path("/var/log/journal") / f"{machine}.agentgw-{PROFILE}"
    return sum(p.stat().st_size for p in root.glob("*.journal*") if p.is_file())


def oldest_entry_us() -> int:
    """The wall-clock time (microseconds) of the oldest entry left in the profile's journal."""
    with subprocess.Popen(["journalctl", f"--namespace=agentgw-{PROFILE}", "-o", "json",
                           "--no-pager", "-q"], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        proc.kill()
    return int(json.loads(first)["__REALTIME_TIMESTAMP"]) if first else 0


def test_a_flood_is_held_to_the_profiles_journal_size_cap(build: tuple[Releases, Path]) -> None:
    """With logs.max_use 8M and no rate limit, a release that floods stderr writes past the
    cap: journald deletes the oldest files (everything from before the flood goes) and the
    journal never takes more than the cap plus the one file being rotated (max_use/8). The
    shared journal does not take the flood."""
    releases, path = build
    sha = (path / "logflood" / "VERSION").read_text().strip()
    if not list((OPT / "releases").glob(f"{sha}-logflood")):
        agentgw("release", "add", str(path / "logflood"), "--sha", sha, "--label", "logflood",
                "--sign-key", str(KEY))
    config = ETC / "gateways" / f"{PROFILE}.yaml"
    data = yaml.safe_load(config.read_text())
    data["logs"] = {"max_use": f"{CAP_MIB}M", "rate_limit_burst": 0}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    flood_start_us = int(time.time() * 1e6)
    assert 0 < oldest_entry_us() < flood_start_us
    sizes: list[int] = []
    try:
        agentgw("apply")
        conf = Path(f"/etc/systemd/journald@agentgw-{PROFILE}.conf").read_text()
        assert f"SystemMaxUse={CAP_MIB}M" in conf and "RateLimitBurst=0" in conf
        agentgw("promote", PROFILE, sha, "--allow-downgrade", check=False)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and oldest_entry_us() < flood_start_us:
            sizes.append(journal_bytes())
            time.sleep(0.5)
        # Past the first deletions, journald goes on at the cap.
        for _ in range(10):
            sizes.append(journal_bytes())
            time.sleep(0.5)
        oldest = oldest_entry_us()
        flooded = sh("journalctl", f"--namespace=agentgw-{PROFILE}", "-o", "cat",
                     "--no-pager", "--since", since, "-g", "fault logflood x", "-q",
                     check=True).stdout
    finally:
        agentgw("promote", PROFILE, releases.a, "--allow-downgrade", check=False)
        shutil.copy(REPO / "gateways" / f"{PROFILE}.yaml", config)
        agentgw("apply")
    assert oldest > flood_start_us, "nothing older than the flood was deleted: cap not reached"
    # journald deletes old files when it rotates the active one, so right at a rotation the
    # total can be over the cap by that one file: SystemMaxFileSize=, max_use/8 by default.
    assert max(sizes) <= (CAP_MIB << 20) * 9 // 8, f"journal sizes {sizes}, cap {CAP_MIB} MiB"
    assert max(sizes) > (CAP_MIB << 20) // 2, sizes
    assert flooded.count("\n") > 1000
    # The shared journal: journalctl -g exits 1 when nothing matches.
    shared = subprocess.run(
        ["journalctl", "-o", "cat", "--no-pager", "--since", since, "-g", "fault logflood x",
         "-q"], capture_output=True, text=True)
    assert (shared.returncode, shared.stdout) == (1, "")
