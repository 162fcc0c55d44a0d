"""The sandbox broker as its real unit on a real systemd (inside the lab), with real microVMs.

The host is set up as an operator would (init installs the broker's user, unit and client;
apply the profiles), then ``systemctl start agentgw-sandbox``. Callers are real processes
running as root, agent-core and the api gateway itself, so SO_PEERCRED answers are the
kernel's. VMs are few (this machine has 2 cores and TCG boots take ~1.8 s of CPU): the warm
pool's plus one per exec.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentgw.model.host import HostConfig
from agentgw.sandbox.protocol import argv_digest
from tests.integration.support import AGENTGW, ETC, REPO, agentgw, setup_host, sh

pytestmark = pytest.mark.integration

UNIT = "agentgw-sandbox.service"
SOCKETS = Path("/run/agentgw/sandbox")
EXECS = Path("/var/lib/agentgw/sandbox/execs.jsonl")
API_IP = "127.77.0.3"
BROKER_USER = "agentgw-sandbox"

# Run as the caller: one request on a socket; prints the answer line, or the connect() errno.
CALLER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(f"connect-errno {exc.errno}")
    sys.exit(0)
s.sendall(b'{"argv": ["true"]}\n')
s.shutdown(socket.SHUT_WR)
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.decode().strip())
"""


def free_port(host: str) -> int:
    """A port free on ``host`` now: labs share the machine's network namespace, and another
    lab's gateway may hold the example profile's port."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def status_of(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines())}


def broker_qemus() -> list[int]:
    uid = pwd.getpwnam(BROKER_USER).pw_uid
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and (entry / "comm").read_text().strip()
                    .startswith("qemu-system") and entry.stat().st_uid == uid):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def records() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXECS.read_text().splitlines()]


@pytest.fixture(scope="module")
def api_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Profiles applied; api listens on a free port of its own address and runs release A.
    Afterwards api's example config is restored and applied again."""
    built = setup_host(tmp_path_factory.mktemp("build"))
    config = ETC / "gateways" / "api.yaml"
    port = free_port(API_IP)
    try:
        text = (REPO / "gateways" / "api.yaml").read_text()
        config.write_text(re.sub(r"(?m)^listen: .*$", f"listen: {API_IP}:{port}", text))
        agentgw("apply")
        agentgw("promote", "api", built.a, "--allow-downgrade")
        yield port
    finally:
        shutil.copy(REPO / "gateways" / "api.yaml", config)
        agentgw("apply", check=False)


@pytest.fixture(scope="module")
def broker(api_port: int) -> Iterator[int]:
    """agentgw-sandbox.service as `agentgw init` installed it, started; its MainPID. It is
    stopped afterwards, and no VM of it may outlive it."""
    try:
        sh("systemctl", "start", UNIT, check=True)  # Type=notify: returns once the sockets serve
        pid = int(sh("systemctl", "show", "-P", "MainPID", UNIT, check=True).stdout)
        assert pid > 0
        yield pid
    finally:
        sh("systemctl", "stop", UNIT)
        deadline = time.monotonic() + 10
        while broker_qemus() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert broker_qemus() == []


def test_unit_is_hardened_and_qemu_runs_without_privileges(
    broker: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """systemd-analyze scores the unit at or under the host's threshold (printed); the broker
    serves with no capability left, as agentgw-sandbox in group kvm; its warm VM's QEMU runs
    as that user with no capability and a seccomp filter; sockets are 0660 root:agent-<p> in
    a 0755 directory; /dev/kvm is in the broker's /dev."""
    report = sh("systemd-analyze", "security", UNIT).stdout
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)
    assert match is not None, report
    score, target = float(match.group(1)), HostConfig().exposure_threshold
    with capsys.disabled():
        print(f"\n{UNIT}: systemd-analyze security exposure {score} (target <= {target})")
    assert score <= target, report
    broker_status = status_of(broker)
    user = pwd.getpwnam(BROKER_USER)
    kvm = os.stat("/dev/kvm").st_gid
    assert broker_status["Uid"].split()[0] == str(user.pw_uid)
    assert str(kvm) in broker_status["Groups"].split()
    assert (broker_status["CapEff"], broker_status["CapPrm"], broker_status["NoNewPrivs"]) == (
        "0000000000000000", "0000000000000000", "1")
    deadline = time.monotonic() + 30
    while not broker_qemus() and time.monotonic() < deadline:
        time.sleep(0.2)
    (qemu, *_) = broker_qemus()
    vm_status = status_of(qemu)
    assert (vm_status["CapEff"], vm_status["Seccomp"]) == ("0000000000000000", "2")
    assert stat.S_IMODE(SOCKETS.stat().st_mode) == 0o755
    for profile in ("api", "core", "mcp"):
        st = (SOCKETS / f"{profile}.sock").stat()
        group = pwd.getpwnam(f"agent-{profile}").pw_gid
        assert (stat.S_ISSOCK(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
            True, 0o660, 0, group)
    in_broker = sh("nsenter", "-t", str(broker), "-m", "test", "-c", "/dev/kvm")
    assert in_broker.returncode == 0


def test_exec_prints_hi_and_exits_3_through_the_broker(broker: int) -> None:
    """`agentgw exec api -- sh -c 'echo hi; exit 3'` prints hi and exits 3, and the broker
    (not the CLI) recorded it: via broker, caller root, the argv's digest only."""
    argv = ["sh", "-c", "echo hi; exit 3"]
    before = len(records()) if EXECS.exists() else 0
    proc = sh(AGENTGW, "exec", "api", "--", *argv, timeout=60)
    assert (proc.stdout, proc.returncode) == ("hi\n", 3), proc.stderr
    (record,) = records()[before:]
    assert (record["profile"], record["via"], record["uid"], record["exit_code"]) == (
        "api", "broker", 0, 3)
    assert record["argv_sha256"] == argv_digest(argv)
    assert record["backend"] in ("kvm", "tcg") and "echo hi" not in EXECS.read_text()


def test_stdin_and_a_file_round_trip(broker: int, tmp_path: Path) -> None:
    """Binary stdin and a binary file reach the VM through the broker byte for byte."""
    data, stdin = os.urandom(50_000), os.urandom(30_000) + b"\x00\r\n"
    local = tmp_path / "data.bin"
    local.write_bytes(data)
    proc = subprocess.run(
        [AGENTGW, "exec", "-i", "--file", f"{local}:in/data.bin", "api", "--",
         "sh", "-c", "sha256sum; sha256sum in/data.bin"],
        input=stdin, capture_output=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert [line.split()[0] for line in lines] == [
        hashlib.sha256(stdin).hexdigest(), hashlib.sha256(data).hexdigest()]


def test_a_profile_cannot_use_another_profiles_socket(broker: int) -> None:
    """agent-core cannot even connect() to api.sock (EACCES: the socket's group); a process
    that shares api's group but runs as agent-core is refused by SO_PEERCRED ('forbidden')."""
    python = ["/usr/bin/python3", "-I", "-c", CALLER, str(SOCKETS / "api.sock")]
    plain = sh("setpriv", "--reuid=agent-core", "--regid=agent-core", "--clear-groups",
               *python, check=True).stdout.strip()
    assert plain == "connect-errno 13"
    in_group = sh("setpriv", "--reuid=agent-core", "--regid=agent-api", "--clear-groups",
                  *python, check=True).stdout.strip()
    answer = json.loads(in_group)
    assert (answer["ok"], answer["error"]) == (False, "forbidden")


def test_the_gateway_execs_in_the_vm_through_its_own_socket(
    broker: int, api_port: int
) -> None:
    """POST /exec on the api gateway (its own loopback address) runs the job in a microVM:
    another kernel than the host's, the guest's unprivileged uid; the broker saw the caller as
    agent-api. The gateway's own /dev has no /dev/kvm."""
    conn = http.client.HTTPConnection(API_IP, api_port, timeout=60,
                                      source_address=(API_IP, 0))
    body = {"argv": ["sh", "-c", "uname -r; cat; id -u"], "stdin": "from-the-gateway\n"}
    try:
        conn.request("POST", "/exec", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200, answer
    kernel, echoed, uid = answer["stdout"].splitlines()
    assert (answer["exit_code"], echoed) == (0, "from-the-gateway")
    assert kernel != os.uname().release and uid != "0"
    assert records()[-1]["uid"] == pwd.getpwnam("agent-api").pw_uid
    gateway = int(sh("systemctl", "show", "-P", "MainPID", "agent-gateway@api", check=True).stdout)
    no_kvm = sh("nsenter", "-t", str(gateway), "-m", "test", "-e", "/dev/kvm")
    assert no_kvm.returncode == 1


def test_records_rotate_under_the_running_broker(broker: int) -> None:
    """With rotation.max_bytes 4096, agentgw-verify.service's ExecStartPre (`agentgw rotate`,
    under that unit's sandbox) moves the exec records to execs.jsonl.1 (and the history to
    history.jsonl.1 when it is over the bound too); the broker, still running on the
    descriptor systemd gave it, writes its next record into the emptied live file; the exec
    counter counts across both files, and `history --verify` stays green."""
    host_yaml = ETC / "agentgw.yaml"
    original = host_yaml.read_text()
    pad = [json.dumps({"time": "2026-01-01T00:00:00.000+00:00", "profile": "mcp", "uid": 0,
                       "via": "broker", "argv_sha256": "0" * 64, "duration_s": 0.1,
                       "exit_code": 0, "timed_out": False, "backend": "tcg", "warm": True})
           for _ in range(16)]
    with EXECS.open("a") as f:  # as if 16 more jobs had run: over the 4096-byte bound
        f.write("".join(line + "\n" for line in pad))
    before = EXECS.read_bytes()
    history = Path("/var/lib/agentgw/history.jsonl")
    history_over = history.stat().st_size > 4096
    try:
        host_yaml.write_text(original + "rotation:\n  max_bytes: 4096\n  keep: 2\n")
        sh("systemctl", "start", "agentgw-verify.service", timeout=600)  # proofs' verdict: n/a
        journal = sh("journalctl", "-u", "agentgw-verify.service", "-o", "cat", "-n", "200").stdout
        assert f"{EXECS}: rotated" in journal, journal
        assert (EXECS.with_name("execs.jsonl.1").read_bytes(), EXECS.read_bytes()) == (before, b"")
        proc = sh(AGENTGW, "exec", "api", "--", "true", timeout=60)
        assert proc.returncode == 0, proc.stderr
        (record,) = records()
        assert (record["profile"], record["via"], record["exit_code"]) == ("api", "broker", 0)
        metrics = agentgw("metrics").stdout
        mcp = re.search(r'agentgw_sandbox_execs_total\{profile="mcp",result="ok"\} (\S+)', metrics)
        assert mcp is not None and float(mcp.group(1)) >= 16, metrics
        assert history.with_name("history.jsonl.1").exists() == history_over
        assert agentgw("history", "--verify").returncode == 0
    finally:
        host_yaml.write_text(original)


def test_stopping_removes_sockets_and_every_vm(broker: int) -> None:
    """systemctl stop: the socket directory is gone and no QEMU of the broker is left."""
    sh("systemctl", "stop", UNIT, check=True)
    assert not SOCKETS.exists()
    assert broker_qemus() == []
