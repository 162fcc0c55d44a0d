"""A host that cannot enforce IPAddressDeny= is reported "not enforced", never "isolated".

Boots its own lab with bpf() blocked by nspawn's seccomp filter (`agentgw lab up --no-bpf`):
systemd accepts IPAddressDeny=any there and silently does not enforce it. Runs from the host
(marker ``lab``), sets the demo host up inside and runs verify there.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest

from tests.integration.support import AGENTGW, PROFILES, REPO

pytestmark = pytest.mark.lab

INSIDE = """
import json, pathlib, sys, tempfile
sys.path.insert(0, ".")
from tests.integration.support import PROFILES, agentgw, setup_host
releases = setup_host(pathlib.Path(tempfile.mkdtemp()))
for p in PROFILES:
    agentgw("promote", p, releases.a)
proc = agentgw("verify", "--json", check=False)
records = json.loads(proc.stdout)["proofs"] if proc.stdout else []
print(json.dumps({"code": proc.returncode, "records": records, "stderr": proc.stderr}))
"""


def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENTGW, "lab", *args], capture_output=True, text=True, check=check)


def test_egress_is_not_enforced_in_a_lab_without_bpf() -> None:
    """Without bpf(), every profile's egress check is "not-enforced" (the deny probes got
    through, the unit does deny them, and the host probe shows the firewall off), every other
    check passes, the host facts say so, and no profile is reported isolated (exit 3)."""
    name = f"proofs-nobpf-{uuid.uuid4().hex[:6]}"
    lab("up", "--no-bpf", "--name", name)
    try:
        done = lab("exec", "--name", name, "--cwd", str(REPO), "--",
                   "/opt/agentgw/venv/bin/python", "-c", INSIDE)
    finally:
        lab("down", "--name", name, check=False)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert 3 == result["code"], result["stderr"]
    records = {r["profile"]: r for r in result["records"]}
    assert set(PROFILES) == set(records)
    for record in records.values():
        assert ("not-enforced", "enforced") == (
            record["host"]["bpf_firewall"], record["host"]["protect_proc"])
        assert {"egress": "not-enforced"} == {
            c["name"]: c["result"] for c in record["checks"] if c["result"] != "passed"}
        assert (False, "not enforced by this host: egress") == (
            record["isolated"], record["reason"])
