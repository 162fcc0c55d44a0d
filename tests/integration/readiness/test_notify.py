"""readiness: notify on the real systemd: READY=1 from a child of the gateway is accepted
(NotifyAccess=all), the profile promotes, lints clean and verifies isolated at exposure
<= 1.5, like a readiness: health profile."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from agentgw.observe.lint import exposure
from tests.integration.support import ETC, REPO, Releases, agentgw, setup_host

pytestmark = pytest.mark.integration

PROFILE = "ntf"


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    releases = setup_host(tmp_path_factory.mktemp("build"))
    core = (REPO / "gateways" / "core.yaml").read_text()
    core = core.replace("readiness: health", "readiness: notify")
    core = core.replace("127.77.0.2", "127.77.0.7").replace("AGENT_CHANNEL: chat",
                                                             "AGENT_NOTIFY_FROM: child")
    (ETC / "gateways" / f"{PROFILE}.yaml").write_text(core)
    agentgw("apply")
    try:
        yield releases
    finally:
        for verb in ("stop", "disable", "reset-failed"):
            subprocess.run(["systemctl", verb, f"agent-gateway@{PROFILE}.service"],
                           capture_output=True, check=False)
        (ETC / "gateways" / f"{PROFILE}.yaml").unlink(missing_ok=True)
        agentgw("apply", "--prune", check=False)


def test_ready_from_a_child_promotes_lints_and_verifies(rel: Releases) -> None:
    """The gateway sends READY=1 from a forked child: the promote succeeds (systemd logged no
    refusal), lint's readiness check sees Type=notify with NotifyAccess=all, verify says
    isolated and the exposure stays <= 1.5."""
    out = json.loads(agentgw("promote", PROFILE, rel.a, "--json").stdout)
    assert out["result"] == "ok", out
    journal = subprocess.run(
        ["journalctl", "-u", f"agent-gateway@{PROFILE}.service", "--no-pager", "-o", "cat"],
        capture_output=True, text=True, check=False,
    ).stdout
    assert "reception only permitted for main PID" not in journal
    lint = json.loads(agentgw("lint", PROFILE, "--json").stdout)
    readiness = [f for f in lint["findings"] if f["check"] == "readiness"]
    assert readiness and readiness[0]["ok"], readiness
    assert readiness[0]["evidence"]["Type"] == "notify"
    assert readiness[0]["evidence"]["NotifyAccess"] == "all"
    (record,) = json.loads(agentgw("verify", PROFILE, "--json").stdout)["proofs"]
    assert record["isolated"] is True
    score = exposure(f"agent-gateway@{PROFILE}.service")
    assert score is not None and score <= 1.5
