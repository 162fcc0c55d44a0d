"""From the attacker's side: a release whose gateway answers its health check with 64 KiB of
'[' (a body that recurses past any JSON parser's limit). Before, the promote died there with
the new release current and running, an intent left behind and no history record; now the
command ends with a result, a record, no intent, and api aligned to whatever current says."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    KEY,
    OPT,
    REPO,
    Releases,
    agentgw,
    all_promoted,
    status_json,
)

pytestmark = pytest.mark.integration

INTENTS = Path("/var/lib/agentgw/intents")


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Releases, str]]:
    build = tmp_path_factory.mktemp("build")
    with all_promoted(build) as releases:
        out = subprocess.run([str(REPO / "scripts/build-releases"), "--out", str(build)],
                             capture_output=True, text=True, check=True).stdout
        sha = {line.split()[0]: line.split()[1] for line in out.splitlines()}["deephealth"]
        if not list((OPT / "releases").glob(f"{sha}-deephealth")):
            agentgw("release", "add", str(build / "deephealth"), "--sha", sha, "--label",
                    "deephealth", "--sign-key", str(KEY))
        yield releases, sha
        agentgw("promote", "api", releases.a, "--allow-downgrade", check=False)


def test_a_health_body_that_breaks_parsers_never_skips_the_record(
    deep: tuple[Releases, str],
) -> None:
    """The promote exits with a result (no traceback), records it, leaves no intent, and the
    profile is aligned to its current release."""
    _, sha = deep
    proc = agentgw("promote", "api", sha, "--json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr
    outcome = json.loads(proc.stdout)
    assert outcome["result"] in ("ok", "rolled_back")
    assert not (INTENTS / "api.json").exists()
    history = json.loads(agentgw("history", "api", "--json").stdout)["records"]
    assert history[-1]["action"] == "promote" and history[-1]["detail"]["release"] == (
        f"{sha}-deephealth")
    assert status_json("api")["aligned"]["state"] == "yes"
