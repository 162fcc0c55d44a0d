"""`agentgw verify` on a real systemd (inside the lab): the three demo profiles are proven
isolated, each sabotage flips exactly the check it breaks (and back once undone), convenience
mode is never isolated, records are signed, and the verify and OnFailure= units work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentgw.model.proof import CHECK_NAMES
from tests.integration.support import ETC, OPT, PROFILES, Releases, agentgw, all_promoted, sh

pytestmark = pytest.mark.integration

UNIT_DIR = Path("/etc/systemd/system")
PROOFS = Path("/var/lib/agentgw/proofs")
HOST_PUB = Path("/var/lib/agentgw/host.key.pub")
SABOTAGE = "90-sabotage.conf"
Record = dict[str, Any]


@pytest.fixture(scope="module")
def rel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    """The lab host of support.py with all three profiles running release A (see
    support.all_promoted)."""
    with all_promoted(tmp_path_factory.mktemp("build")) as releases:
        yield releases


def verify(*args: str) -> tuple[int, dict[str, Record]]:
    proc = agentgw("verify", *args, "--json", check=False)
    assert proc.stdout, proc.stderr
    return proc.returncode, {r["profile"]: r for r in json.loads(proc.stdout)["proofs"]}


def results(record: Record) -> dict[str, str]:
    return {c["name"]: c["result"] for c in record["checks"]}


def not_passed(record: Record) -> dict[str, str]:
    return {n: r for n, r in results(record).items() if r != "passed"}


def check(record: Record, name: str) -> Record:
    found: Record = next(c for c in record["checks"] if c["name"] == name)
    return found


def test_all_proofs_pass_for_the_three_demo_profiles(rel: Releases) -> None:
    """Every check passes for core, api and mcp; each record holds the exposure score (at or
    under the threshold), host facts (cgroup v2, BPF firewall and ProtectProc enforced), the
    gateway's and the probe's sandbox properties (equal), and a valid signature; status
    reports each profile isolated."""
    code, records = verify()
    assert 0 == code
    assert set(PROFILES) == set(records)
    for p, record in records.items():
        assert list(CHECK_NAMES) == [c["name"] for c in record["checks"]]
        assert (True, {}) == (record["isolated"], not_passed(record)), record["reason"]
        assert isinstance(record["exposure"], float)
        assert record["exposure"] <= record["exposure_threshold"]
        assert check(record, "exposure")["evidence"]["score"] == record["exposure"]
        host = record["host"]
        assert ("unified", "enforced", "enforced") == (
            host["cgroup"], host["bpf_firewall"], host["protect_proc"])
        sandbox = record["sandbox"]
        assert sandbox["match"] is True and sandbox["gateway"] == sandbox["probe"]
        assert f"agent-{p}" == sandbox["gateway"]["User"]
        assert ["0.0.0.0/0", "::/0"] == sandbox["gateway"]["IPAddressDeny"]
        agentgw("attest", "verify", str(PROOFS / f"{p}.json"))
    status = json.loads(agentgw("status", "--json").stdout)
    assert {p: "isolated" for p in PROFILES} == {
        s["profile"]: s["isolation"]["state"] for s in status["profiles"]}


def test_a_record_edited_after_signing_fails_attest(rel: Releases, tmp_path: Path) -> None:
    """Changing one check's result in a signed record makes `agentgw attest verify` exit 3,
    while the untouched record verifies."""
    verify("api")
    agentgw("attest", "verify", str(PROOFS / "api.json"), "--pubkey", str(HOST_PUB))
    document = json.loads((PROOFS / "api.json").read_text())
    edited = tmp_path / "api.json"
    check(document, "egress")["result"] = "not-enforced"
    edited.write_text(json.dumps(document, indent=2))
    proc = agentgw("attest", "verify", str(edited), "--pubkey", str(HOST_PUB), check=False)
    assert 3 == proc.returncode
    assert "bad signature: the record was changed after it was signed" in proc.stderr


def test_registry_tcp_address_is_probed_and_unreachable(rel: Releases) -> None:
    """With registry.tcp configured, the probe also tries the registry's loopback address
    (a listener of verify's there): the gateway cannot reach it."""
    host = ETC / "agentgw.yaml"
    original = host.read_text()
    try:
        host.write_text(original + "registry:\n  tcp: 127.77.0.1:9177\n")
        code, records = verify("api")
    finally:
        host.write_text(original)
    assert 0 == code
    attempts = check(records["api"], "egress")["evidence"]["attempts"]
    [registry] = [a for a in attempts if a["target"] == "registry"]
    assert ("127.77.0.1", "deny", "timeout", "EPERM") == (
        registry["host"], registry["expect"], registry["tcp"], registry["udp"])


def reload_and_restart(*profiles: str) -> None:
    sh("systemctl", "daemon-reload", check=True)
    for p in profiles:
        sh("systemctl", "restart", f"agent-gateway@{p}.service", check=True)


@contextmanager
def dropin(profile: str, text: str) -> Iterator[None]:
    """An extra drop-in on one instance (after agentgw's 50-agentgw.conf), undone afterwards."""
    path = UNIT_DIR / f"agent-gateway@{profile}.service.d" / SABOTAGE
    path.write_text(text)
    try:
        reload_and_restart(profile)
        yield
    finally:
        path.unlink()
        reload_and_restart(profile)


@contextmanager
def chmod(path: Path, mode: int) -> Iterator[None]:
    before = path.stat().st_mode & 0o7777
    os.chmod(path, mode)
    try:
        yield
    finally:
        os.chmod(path, before)


Sabotage = Callable[[], Any]
SABOTAGES: dict[str, tuple[Sabotage, dict[str, dict[str, str]]]] = {
    "pythonpath-dropin": (
        lambda: dropin("api", "[Service]\nEnvironment=PYTHONPATH=/x\n"),
        {"api": {"unit-lint": "failed"}},
    ),
    "ipaddressdeny-cleared": (
        lambda: dropin("api", "[Service]\nIPAddressDeny=\n"),
        {"api": {"egress": "failed"}},
    ),
    "sibling-home-0755": (
        lambda: chmod(OPT / "gateways" / "core" / "home", 0o755),
        {"api": {"cross-profile-read": "failed"}, "mcp": {"cross-profile-read": "failed"},
         "core": {}},
    ),
    "denied-tool-visible": (
        # Reset the denied tools but keep the template's own (agentgw's config and state).
        lambda: dropin("api", "[Service]\nInaccessiblePaths=\n"
                              "InaccessiblePaths=-/etc/agentgw -/var/lib/agentgw\n"),
        {"api": {"denied-tools": "failed"}},
    ),
    "requires-between-instances": (
        lambda: dropin("api", "[Unit]\nRequires=agent-gateway@core.service\n"),
        {"api": {"unit-lint": "failed"}},
    ),
}


@pytest.mark.parametrize("case", list(SABOTAGES))
def test_sabotage_flips_exactly_the_right_check(rel: Releases, case: str) -> None:
    """With the sabotage in place, verify exits 3 and exactly the expected check fails for
    the affected profiles (the others stay isolated); once undone, they are isolated again."""
    make, expected = SABOTAGES[case]
    names = sorted(expected)
    with make():
        code, records = verify(*names) if len(names) == 1 else verify()
        assert 3 == code
        assert expected == {p: not_passed(records[p]) for p in names}
        for p in names:
            assert records[p]["isolated"] is (not expected[p])
    code, records = verify(*names) if len(names) == 1 else verify()
    assert (0, {p: {} for p in names}) == (code, {p: not_passed(records[p]) for p in names})


def test_sabotage_evidence_names_the_cause(rel: Releases) -> None:
    """The failed check says what happened: the drop-in line for PYTHONPATH, the reached
    address for a cleared IPAddressDeny=."""
    with dropin("api", "[Service]\nEnvironment=PYTHONPATH=/x\n"):
        _, records = verify("api")
    lint = check(records["api"], "unit-lint")
    assert f"{UNIT_DIR}/agent-gateway@api.service.d/{SABOTAGE}:2: Environment=PYTHONPATH=/x" in (
        lint["evidence"]["pythonpath"])
    with dropin("api", "[Service]\nIPAddressDeny=\n"):
        _, records = verify("api")
    egress = check(records["api"], "egress")
    reached = [a for a in egress["evidence"]["attempts"] if a["tcp"] == "connected"]
    assert {"not allowlisted", "sibling core", "sibling mcp", "own address"} == {
        a["target"] for a in reached}
    assert [] == egress["evidence"]["IPAddressDeny"]


def test_convenience_mode_is_never_isolated(rel: Releases) -> None:
    """isolation: convenience -> every profile runs as agent-shared, sibling files are
    readable, and each record says not isolated, with that reason; production restores it."""
    host = ETC / "agentgw.yaml"
    original = host.read_text()
    try:
        host.write_text(original.replace("isolation: production", "isolation: convenience"))
        agentgw("apply")
        code, records = verify()
        assert 3 == code
        for record in records.values():
            assert record["isolated"] is False
            assert record["reason"].startswith("convenience mode: every profile runs as "
                                               "agent-shared; not isolated")
            assert "failed" == results(record)["cross-profile-read"]
            assert "agent-shared" == record["sandbox"]["gateway"]["User"]
    finally:
        host.write_text(original)
        agentgw("apply")
    code, records = verify()
    assert (0, {p: True for p in PROFILES}) == (
        code, {p: r["isolated"] for p, r in records.items()})


def test_lifecycle_flag_restarts_and_proves_siblings_unchanged(rel: Releases) -> None:
    """--lifecycle restarts the profile first; the lifecycle check then cites that restart
    with its siblings' MainPIDs unchanged."""
    before = json.loads((PROOFS / "mcp.json").read_text())["main_pid"] if (
        PROOFS / "mcp.json").exists() else 0
    code, records = verify("mcp", "--lifecycle")
    assert 0 == code
    evidence = check(records["mcp"], "lifecycle")["evidence"]
    assert ("restart", True) == (evidence["op"], evidence["siblings_unchanged"])
    assert records["mcp"]["main_pid"] != before


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[Record]]]:
    bodies: list[Record] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_verify_unit_runs_and_onfailure_hook_records_a_failure(
    rel: Releases, webhook: tuple[str, list[Record]]
) -> None:
    """agentgw-verify.service (as installed by init, hardened) proves every profile; a gateway
    that fails for good starts agentgw-onfailure@<p>, which appends a failure record to the
    history and POSTs it to the configured webhook."""
    sh("systemctl", "start", "agentgw-verify.service", check=True)
    result = sh("systemctl", "show", "-P", "Result", "agentgw-verify.service",
                check=True).stdout.strip()
    assert "success" == result
    url, bodies = webhook
    host = ETC / "agentgw.yaml"
    original = host.read_text()
    path = UNIT_DIR / "agent-gateway@mcp.service.d" / SABOTAGE
    try:
        host.write_text(original + f"webhook: {url}\n")
        path.write_text("[Service]\nExecStart=\nExecStart=/bin/false\nRestart=no\n")
        sh("systemctl", "daemon-reload", check=True)
        subprocess.run(["systemctl", "restart", "agent-gateway@mcp.service"], check=False)
        deadline = time.monotonic() + 15
        while not bodies and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [("gateway_failed", "mcp", "exit-code", "exited", "1")] == [
            (b["event"], b["profile"], b["service_result"], b["exit_code"], b["exit_status"])
            for b in bodies]
        history = json.loads(agentgw("history", "mcp", "--json").stdout)["records"]
        assert ("failure", "failed") == (history[-1]["action"], history[-1]["result"])
        agentgw("history", "--verify")
    finally:
        host.write_text(original)
        path.unlink(missing_ok=True)
        sh("systemctl", "daemon-reload", check=True)
        subprocess.run(["systemctl", "reset-failed", "agent-gateway@mcp.service"], check=False)
        agentgw("restart", "mcp")
    assert 0 == verify("mcp")[0]


def test_verify_refuses_a_stopped_profile(rel: Releases) -> None:
    """Only a running gateway can be proven: verify of a stopped profile exits 3 and writes
    nothing; verify of all skips it and says so."""
    record = PROOFS / "mcp.json"
    shutil.copy(record, record.with_suffix(".saved"))
    sh("systemctl", "stop", "agent-gateway@mcp.service", check=True)
    try:
        proc = agentgw("verify", "mcp", check=False)
        assert 3 == proc.returncode
        assert "profile mcp is not running" in proc.stderr
        assert record.read_bytes() == record.with_suffix(".saved").read_bytes()
        proc = agentgw("verify", check=False)
        assert 0 == proc.returncode, proc.stderr
        assert "mcp: not running" in proc.stdout
    finally:
        record.with_suffix(".saved").unlink()
        agentgw("start", "mcp")
