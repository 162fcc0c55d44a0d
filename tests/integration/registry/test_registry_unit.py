"""The registry as its hardened unit on a real systemd (inside the lab), over its unix socket.

Gateways run from real releases (tests/integration/support.py); the registry units are the
repo's systemd/agentgw-registry.socket and .service unchanged: the socket is started, and the
first request starts the service (socket activation). Requests are made by processes running as
root, the admin group, agent-api and a stranger, so the kernel's SO_PEERCRED answer is real.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import given, settings

from tests.integration.support import ETC, OPT, REPO, Releases, agentgw, setup_host, sh

pytestmark = pytest.mark.integration

UNIT = "agentgw-registry.service"
UNIT_FILE = Path("/etc/systemd/system") / UNIT
SOCKET_UNIT = "agentgw-registry.socket"
SOCKET = "/run/agentgw/registry.sock"
EXPOSURE_TARGET = 2.0
# CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19)
CAPS = (1 << 2) | (1 << 19)
ETC_TOKEN = ETC / "registry.token"

# Run as the caller: one raw HTTP/1.1 request over the unix socket; prints status and body.
CLIENT = r"""
import socket, sys
method, path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[3])
s.sendall(f"{method} {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n"
          f"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
head, _, body = data.partition(b"\r\n\r\n")
sys.stdout.write(head.split(b"\r\n")[0].split()[1].decode() + "\n" + body.decode())
"""


def request(user: str | None, method: str, path: str) -> tuple[int, str]:
    """(status, body) of a request made by a process running as ``user`` (None: root)."""
    argv = ["/usr/bin/python3", "-I", "-c", CLIENT, method, path, SOCKET]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]
    out = sh(*argv, check=True).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def get_json(user: str | None, path: str) -> tuple[int, Any]:
    status, body = request(user, "GET", path)
    return status, json.loads(body)


def ensure_user(name: str, *groups: str) -> None:
    if sh("id", name).returncode != 0:
        extra = ["-G", ",".join(groups)] if groups else []
        sh("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", *extra,
           name, check=True)


def snapshot() -> dict[str, tuple[int, int, int, int, str]]:
    """mode, owner, size, mtime and content hash of the state the registry could touch."""
    out: dict[str, tuple[int, int, int, int, str]] = {}
    roots = [Path("/var/lib/agentgw"), Path("/etc/agentgw"), Path("/opt/agent/releases")]
    roots += [p for g in Path("/opt/agent/gateways").iterdir()
              for p in (g / "current", g / "previous", g / "env")]
    for root in roots:
        for path in [root, *(root.rglob("*") if root.is_dir() and not root.is_symlink() else [])]:
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            digest = (hashlib.sha256(path.read_bytes()).hexdigest()
                      if stat.S_ISREG(st.st_mode) else os.readlink(path)
                      if stat.S_ISLNK(st.st_mode) else "")
            out[str(path)] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    """Releases added; api and core promoted to A (mcp not)."""
    built = setup_host(tmp_path_factory.mktemp("build"))
    for profile in ("api", "core"):
        agentgw("promote", profile, built.a, "--allow-downgrade")
    return built


@dataclass(frozen=True)
class Activation:
    """What the lab showed between starting the socket unit and the service's first request."""

    socket_stat: os.stat_result  # of /run/agentgw/registry.sock, before the service ran
    before: str  # the service's ActiveState then
    status: int  # of the first request (GET /health as root)
    pid: int  # the service's MainPID after it


def unit_state(unit: str) -> str:
    return sh("systemctl", "show", "-P", "ActiveState", unit, check=True).stdout.strip()


@pytest.fixture(scope="module")
def activation(releases: Releases) -> Iterator[Activation]:
    """Both registry units installed from the repo, only the socket started; then the first
    request, which starts the service."""
    sh("groupadd", "-f", "--system", "agentgw", check=True)
    ensure_user("regadmin", "agentgw")
    ensure_user("stranger")
    # An earlier test of the same lab may have left the registry running.
    sh("systemctl", "stop", SOCKET_UNIT, UNIT)
    shutil.copy(REPO / "systemd" / UNIT, UNIT_FILE)
    shutil.copy(REPO / "systemd" / SOCKET_UNIT, UNIT_FILE.with_name(SOCKET_UNIT))
    sh("systemctl", "daemon-reload", check=True)
    try:
        sh("systemctl", "start", SOCKET_UNIT, check=True)
        socket_stat, before = os.stat(SOCKET), unit_state(UNIT)
        status, _ = request(None, "GET", "/health")
        pid = int(sh("systemctl", "show", "-P", "MainPID", UNIT, check=True).stdout)
        yield Activation(socket_stat, before, status, pid)
    finally:
        sh("systemctl", "stop", SOCKET_UNIT, UNIT)
        UNIT_FILE.unlink(missing_ok=True)
        UNIT_FILE.with_name(SOCKET_UNIT).unlink(missing_ok=True)
        sh("systemctl", "daemon-reload", check=True)


@pytest.fixture(scope="module")
def registry(activation: Activation) -> int:
    """The registry service, started by its first request; its MainPID."""
    assert activation.pid > 0
    return activation.pid


def test_the_socket_exists_first_and_the_first_request_starts_the_service(
    activation: Activation, registry: int
) -> None:
    """systemd made the socket (0666 root:root) while the service was inactive; the first
    request started it and was answered by it (200); the service holds the socket systemd
    passed and never made one: it has no runtime directory, and /run is read-only to it (a
    write in its mount namespace fails with EROFS)."""
    st = activation.socket_stat
    assert stat.S_ISSOCK(st.st_mode)
    assert (0o666, 0, 0) == (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    assert (activation.before, activation.status) == ("inactive", 200)
    assert unit_state(UNIT) == "active"
    assert os.stat(SOCKET).st_ino == st.st_ino  # the same socket file: not remade
    assert sh("systemctl", "show", "-P", "Triggers", SOCKET_UNIT, check=True).stdout.strip() == UNIT
    assert sh("systemctl", "show", "-P", "RuntimeDirectory", UNIT, check=True).stdout.strip() == ""
    probe = sh("nsenter", "-t", str(registry), "-m", "touch", "/run/agentgw/probe")
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe


def test_unit_runs_hardened_with_exposure_at_most_2(
    registry: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """systemd-analyze scores the running unit <= 2.0 (printed); the process really has only
    the two capabilities, no new privileges, a seccomp filter, and a read-only /usr."""
    report = sh("systemd-analyze", "security", UNIT).stdout
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)
    assert match is not None, report
    score = float(match.group(1))
    with capsys.disabled():
        print(f"\n{UNIT}: systemd-analyze security exposure {score} (target <= {EXPOSURE_TARGET})")
    assert score <= EXPOSURE_TARGET, report
    status = Path(f"/proc/{registry}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert CAPS == int(fields["CapBnd"], 16) == int(fields["CapEff"], 16)
    assert ("1", "2") == (fields["NoNewPrivs"].strip(), fields["Seccomp"].strip())
    assert 0o666 == stat.S_IMODE(os.stat(SOCKET).st_mode)


def test_root_sees_every_profile_with_live_alignment(registry: int) -> None:
    """As root: all three profiles; api and core run their promoted release and the hardened
    registry proves it (it reads their /proc environ and 0700 launch records); mcp is
    unknown (nothing promoted)."""
    status, doc = get_json(None, "/v1/profiles")
    assert 200 == status
    shown = {p["profile"]: p for p in doc["profiles"]}
    assert ["api", "core", "mcp"] == sorted(shown)
    for name in ("api", "core"):
        assert ("active", "yes") == (shown[name]["active_state"],
                                     shown[name]["aligned"]["state"]), shown[name]
    assert "unknown" == shown["mcp"]["aligned"]["state"]
    assert 200 == request("regadmin", "GET", "/v1/profiles")[0]
    status, page = request(None, "GET", "/")
    assert 200 == status and 3 == page.count("<tr data-profile=")


def test_profile_user_sees_only_its_profile(registry: int) -> None:
    """As agent-api: only api in lists and metrics; core is 404; a stranger gets 403."""
    status, doc = get_json("agent-api", "/v1/profiles")
    assert (200, ["api"]) == (status, [p["profile"] for p in doc["profiles"]])
    assert 404 == request("agent-api", "GET", "/v1/profiles/core")[0]
    assert 200 == request("agent-api", "GET", "/v1/profiles/api")[0]
    metrics = request("agent-api", "GET", "/metrics")[1]
    assert 'profile="api"' in metrics and 'profile="core"' not in metrics
    assert 403 == request("stranger", "GET", "/v1/profiles")[0]
    assert 200 == request("stranger", "GET", "/health")[0]


@pytest.mark.parametrize("user", [None, "agent-api"])
def test_writes_are_405_and_change_nothing(registry: int, user: str | None) -> None:
    """POST/PUT/DELETE/PATCH on every route answer 405, and the host's state, config,
    releases and links are byte-for-byte unchanged afterwards."""
    before = snapshot()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/v1/profiles", "/v1/profiles/api", "/v1/profiles/api/proofs",
                     "/v1/releases", "/v1/sandbox", "/metrics", "/", "/health"):
            status, body = request(user, method, path)
            assert (405, 405) == (status, json.loads(body)["status"]), (method, path)
    assert before == snapshot()
    assert registry == int(sh("systemctl", "show", "-P", "MainPID", UNIT, check=True).stdout)


def flip(link: Path, target: str) -> None:
    tmp = link.with_name(link.name + ".flip")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def test_flip_without_restart_is_not_aligned_and_status_exits_3(
    registry: int, releases: Releases
) -> None:
    """core's current flipped to B without a restart: the process still imports A, so the
    registry and `agentgw status` both say "no" with the reason, and status exits 3; flipped
    back, both say "yes" and status exits 0."""
    link = OPT / "gateways" / "core" / "current"
    original = os.readlink(link)
    other = next(p.name for p in (OPT / "releases").iterdir() if p.name.startswith(releases.b))
    flip(link, f"../../releases/{other}")
    try:
        registry_view = wait_for(lambda: get_json(None, "/v1/profiles/core")[1],
                                 lambda doc: doc["aligned"]["state"] == "no")
        assert "restart to load it" in registry_view["aligned"]["reason"]
        cli = agentgw("status", "--json", check=False)
        assert 3 == cli.returncode, cli.stderr
        rows = {p["profile"]: p for p in json.loads(cli.stdout)["profiles"]}
        assert ("no", "yes") == (rows["core"]["aligned"]["state"], rows["api"]["aligned"]["state"])
        table = agentgw("status", check=False)
        assert 3 == table.returncode and "core: aligned no: " in table.stdout
    finally:
        flip(link, original)
    assert 0 == agentgw("status", "core").returncode
    wait_for(lambda: get_json(None, "/v1/profiles/core")[1],
             lambda doc: doc["aligned"]["state"] == "yes")


def wait_for(fetch: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 10) -> Any:
    """Poll ``fetch`` until ``ok`` holds (the registry serves a snapshot up to a TTL old)."""
    deadline = time.monotonic() + timeout
    while not ok(found := fetch()):
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    return found


def test_releases_sandbox_and_head(registry: int) -> None:
    """Releases list the promoted one as used by api and core; sandbox answers honestly;
    HEAD has no body."""
    status, doc = get_json(None, "/v1/releases")
    assert 200 == status
    used = {(u["profile"], u["slot"]) for r in doc["releases"] for u in r["used_by"]}
    assert {("api", "current"), ("core", "current")} <= used
    status, sandbox = get_json(None, "/v1/sandbox")
    assert 200 == status and sandbox["backend"] in ("kvm", "gvisor", "tcg", "none", "unknown")
    assert sandbox["boundary"] == (None if sandbox["backend"] == "unknown"
                                   else sandbox["backend"] in ("kvm", "gvisor"))
    assert (200, "") == request(None, "HEAD", "/v1/profiles")


TCP = "127.77.0.1:9177"
DROPIN = UNIT_FILE.with_name(UNIT + ".d") / "tcp.conf"
TCP_DROPIN = """[Service]
PrivateNetwork=no
RestrictAddressFamilies=AF_UNIX AF_INET
IPAddressAllow=localhost
"""


def test_tcp_needs_the_dropin_and_the_token(
    registry: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """registry.tcp under the default PrivateNetwork=yes refuses to start, saying why; with the
    documented drop-in it serves TCP (exposure still <= 2.0) behind the bearer token, and
    schemathesis over real HTTP finds no server error. Runs last: it restarts the unit."""
    host_yaml = Path("/etc/agentgw/agentgw.yaml")
    saved = host_yaml.read_text()
    ETC_TOKEN.write_text("lab-token-0123456789\n")
    ETC_TOKEN.chmod(0o600)
    try:
        host_yaml.write_text(saved + f"registry:\n  tcp: {TCP}\n  token_file: {ETC_TOKEN}\n")
        assert 0 != sh("systemctl", "restart", UNIT).returncode
        journal = sh("journalctl", "-u", UNIT, "-o", "cat", "--no-pager", check=True).stdout
        assert "private network namespace" in journal
        DROPIN.parent.mkdir(exist_ok=True)
        DROPIN.write_text(TCP_DROPIN)
        sh("systemctl", "daemon-reload", check=True)
        sh("systemctl", "reset-failed", UNIT, check=True)
        sh("systemctl", "restart", UNIT, check=True)
        report = sh("systemd-analyze", "security", UNIT).stdout
        score = float(re.findall(r"Overall exposure level for \S+: ([0-9.]+)", report)[0])
        with capsys.disabled():
            print(f"\n{UNIT} with the TCP drop-in: exposure {score} (target <= {EXPOSURE_TARGET})")
        assert score <= EXPOSURE_TARGET
        base = f"http://{TCP}"
        no_token = sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                      f"{base}/v1/profiles", check=True)
        assert "401" == no_token.stdout
        auth = {"Authorization": "Bearer lab-token-0123456789"}
        ok = sh("curl", "-s", "-H", f"Authorization: {auth['Authorization']}",
                f"{base}/v1/profiles", check=True)
        assert ["api", "core", "mcp"] == [p["profile"] for p in json.loads(ok.stdout)["profiles"]]
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]

            @settings(max_examples=10, deadline=None, database=None)
            @given(case=operation.as_strategy())
            def check(case: schemathesis.Case[Any]) -> None:
                case.call_and_validate(base_url=base, headers=auth)

            check()
    finally:
        host_yaml.write_text(saved)
        ETC_TOKEN.unlink(missing_ok=True)
        DROPIN.unlink(missing_ok=True)
        sh("systemctl", "daemon-reload", check=True)
        sh("systemctl", "reset-failed", UNIT)
        sh("systemctl", "restart", UNIT)


def systemd_main_pid(profile: str) -> int:
    return int(sh("systemctl", "show", "-P", "MainPID", f"agent-gateway@{profile}.service",
                  check=True).stdout)


def test_status_asks_the_registry_and_is_never_stale(registry: int, releases: Releases) -> None:
    """With the registry running, `agentgw status` is its answer (source "registry"), and a
    restart made behind agentgw's back (systemctl) shows at once: the registry re-reads when
    systemd signalled a change, never serving the old MainPID. It agrees with the rows the
    command computes itself (source "direct", with --etc)."""
    # The watch is live under the hardened unit (else every status would re-read, still
    # correct, but this test would not show the signals doing their job).
    assert get_json(None, "/health")[1]["unit_watch"] is True
    for _ in range(3):
        sh("systemctl", "restart", "agent-gateway@api.service", check=True)
        doc = json.loads(agentgw("status", "api", "--json").stdout)
        assert doc["source"] == "registry"
        (row,) = doc["profiles"]
        assert row["main_pid"] == systemd_main_pid("api") > 0
        assert row["aligned"]["state"] == "yes", row["aligned"]
    direct = json.loads(agentgw("status", "--json", "--etc", str(ETC)).stdout)
    served = json.loads(agentgw("status", "--json").stdout)
    assert (direct["source"], served["source"]) == ("direct", "registry")

    def key(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(p["profile"], p["main_pid"], p["restarts"], (p["release"] or {}).get("name"),
                 p["aligned"]["state"], p["isolation"]["state"]) for p in doc["profiles"]]

    assert key(direct) == key(served)


def test_status_without_the_registry_computes_the_rows(registry: int) -> None:
    """The registry stopped (its socket too: a connection would start it again): status still
    answers, computing the rows itself."""
    sh("systemctl", "stop", SOCKET_UNIT, UNIT, check=True)
    try:
        doc = json.loads(agentgw("status", "--json").stdout)
        assert doc["source"] == "direct"
        assert {p["profile"] for p in doc["profiles"]} == {"api", "core", "mcp"}
    finally:
        sh("systemctl", "start", SOCKET_UNIT, UNIT, check=True)
