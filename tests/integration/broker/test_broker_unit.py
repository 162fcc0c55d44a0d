"""The sandbox broker as its real unit on a real systemd (inside the lab), with its real backend:
microVMs where KVM works, else gVisor (this machine), each job in an agentgw-job@ unit.

The host is set up as an operator would (init installs the broker's user, unit and client;
apply the profiles), then ``systemctl start agentgw-sandbox``. Callers are real processes
running as root, agent-core and the api gateway itself, so SO_PEERCRED answers are the
kernel's. VMs are few (this machine has 2 cores and TCG boots take ~1.8 s of CPU): one per exec.
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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentgw.errors import AgentgwError
from agentgw.model.host import HostConfig
from agentgw.sandbox import gvisor
from agentgw.sandbox.job import JobRequest
from agentgw.sandbox.jobspec import Job
from agentgw.sandbox.protocol import argv_digest, call
from tests.integration.support import AGENTGW, ETC, REPO, agentgw, setup_host, sh

pytestmark = pytest.mark.integration

UNIT = "agentgw-sandbox.service"
CONTROL_UNIT = "agentgw-sandbox.socket"
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
    """agentgw-sandbox.service as `agentgw init` installed it, started (with its control
    socket, agentgw-sandbox.socket); its MainPID. Both are stopped afterwards (else a relay
    would start the broker again), and no VM of it may outlive it."""
    try:
        sh("systemctl", "start", UNIT, check=True)  # Type=notify: returns once it serves
        pid = int(sh("systemctl", "show", "-P", "MainPID", UNIT, check=True).stdout)
        assert pid > 0
        yield pid
    finally:
        sh("systemctl", "stop", UNIT, CONTROL_UNIT)
        deadline = time.monotonic() + 10
        while broker_qemus() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert broker_qemus() == []


def serving_on() -> str:
    """The broker's backend, from the status it told systemd (e.g. 'gvisor', 'tcg')."""
    text = sh("systemctl", "show", "-P", "StatusText", UNIT, check=True).stdout
    match = re.search(r" on (kvm|gvisor|tcg|no backend)", text)
    assert match is not None, text
    return match.group(1)


def test_unit_is_hardened_and_qemu_runs_without_privileges(
    broker: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """systemd-analyze scores the unit at or under the host's threshold (printed); the broker
    serves with no capability left, as agentgw-sandbox, not in group kvm, with no /dev/kvm in
    its /dev, and starts no QEMU on any backend (each VM is a job unit's: test_vm_units.py);
    sockets are 0660 root:agent-<p> in a 0755 directory."""
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
    assert str(kvm) not in broker_status["Groups"].split()
    assert (broker_status["CapEff"], broker_status["CapPrm"], broker_status["CapBnd"],
            broker_status["NoNewPrivs"]) == (
        "0000000000000000", "0000000000000000", "0000000000000000", "1")
    assert broker_qemus() == []
    assert stat.S_IMODE(SOCKETS.stat().st_mode) == 0o755
    for profile in ("api", "core", "mcp"):
        st = (SOCKETS / f"{profile}.sock").stat()
        group = pwd.getpwnam(f"agent-{profile}").pw_gid
        assert (stat.S_ISSOCK(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
            True, 0o660, 0, group)
    in_broker = sh("nsenter", "-t", str(broker), "-m", "test", "-e", "/dev/kvm")
    assert in_broker.returncode == 1


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
    assert record["backend"] == serving_on() and "echo hi" not in EXECS.read_text()


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
    """POST /exec on the api gateway (its own loopback address) runs the job in the sandbox:
    another kernel than the host's, no capability; the broker saw the caller as agent-api.
    The gateway's own /dev has no /dev/kvm."""
    conn = http.client.HTTPConnection(API_IP, api_port, timeout=60,
                                      source_address=(API_IP, 0))
    body = {"argv": ["sh", "-c", "uname -r; cat; grep CapEff /proc/self/status"],
            "stdin": "from-the-gateway\n"}
    try:
        conn.request("POST", "/exec", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200, answer
    kernel, echoed, caps = answer["stdout"].splitlines()
    assert (answer["exit_code"], echoed) == (0, "from-the-gateway")
    assert kernel != os.uname().release and caps.split() == ["CapEff:", "0000000000000000"]
    assert records()[-1]["uid"] == pwd.getpwnam("agent-api").pw_uid
    gateway = int(sh("systemctl", "show", "-P", "MainPID", "agent-gateway@api", check=True).stdout)
    no_kvm = sh("nsenter", "-t", str(gateway), "-m", "test", "-e", "/dev/kvm")
    assert no_kvm.returncode == 1


JOB_SOCKET = "/run/agentgw/sandbox-job.sock"
JOB_WORK = "run/agentgw-job/agentgw-gvisor-*/work"  # in the job unit's own tmpfs
JOB_IN = "run/agentgw-job-io/agentgw-gvisor-io-*/job/in"  # staged with the job, not before

# Run as a job unit's uid (what a job that escaped gVisor, or a guest that escaped QEMU, would
# be): each attempt's errno. A target is a file to open, a socket to connect to, or kill:<pid>.
ESCAPED = r"""
import os, socket, sys
for target in sys.argv[1:]:
    try:
        if target.startswith("kill:"):
            os.kill(int(target[5:]), 0)
        elif target.endswith(".sock"):
            socket.socket(socket.AF_UNIX).connect(target)
        else:
            open(target, "rb").close()
        print(target, "REACHED")
    except OSError as exc:
        print(target, exc.errno)
"""


def job_uids() -> dict[str, int]:
    """Running agentgw-job@ units and the uid each runs as."""
    out = sh("systemctl", "list-units", "--plain", "--no-legend", "--state=active",
             "agentgw-job@*.service", check=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    uids = {n: sh("systemctl", "show", "-P", "UID", n).stdout.strip() for n in names}
    return {n: int(uid) for n, uid in uids.items() if uid.isdigit()}  # not one just ending


def busy_units() -> dict[str, int]:
    """The job units running a job (its files are staged: job/in), not waiting for one."""
    busy = {}
    for name, uid in job_uids().items():
        main = sh("systemctl", "show", "-P", "MainPID", name).stdout.strip()
        if main not in ("", "0") and list(Path(f"/proc/{main}/root").glob(JOB_IN)):
            busy[name] = uid
    return busy


def sandboxes(name: str) -> list[Path]:
    """The job unit's gVisor work dirs (none: a spare unit, no sandbox yet)."""
    main = sh("systemctl", "show", "-P", "MainPID", name).stdout.strip()
    return [] if main in ("", "0") else list(Path(f"/proc/{main}/root").glob(JOB_WORK))


def prepared_units() -> dict[str, int]:
    """The job units waiting for a job with their sandbox started (the broker's pool), once up
    a while (prepared); not the spare ones (no sandbox)."""
    busy = busy_units()
    found = {n: u for n, u in job_uids().items() if n not in busy}
    time.sleep(1.5)  # its sandbox starts in ~0.5 s
    return {n: u for n, u in found.items() if n in job_uids() and sandboxes(n)}


def spare_units() -> dict[str, int]:
    """The job units up with no sandbox (the broker's spare ones)."""
    return {n: u for n, u in job_uids().items() if not sandboxes(n)}


def wait_for(what: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)
    return found


def test_exec_runs_under_gvisor_as_its_own_unit_and_exits_3(
    broker: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where KVM fails its self-test (this machine), the broker runs jobs under gVisor, each in
    an agentgw-job@ unit: `agentgw exec api -- sh -c 'id; ls /; exit 3'` lists the sandbox's
    root (ls works despite this runsc's statx) and exits 3; the record says gvisor. Prints the
    time of `true` through the broker (10 runs)."""
    if serving_on() == "kvm":
        pytest.skip("KVM works on this host: the broker runs microVMs")
    assert serving_on() == "gvisor"
    before = len(records()) if EXECS.exists() else 0
    proc = sh(AGENTGW, "exec", "api", "--", "sh", "-c", "id; ls /; exit 3", timeout=60)
    assert proc.returncode == 3, proc.stderr
    ident, *listing = proc.stdout.splitlines()
    assert ident.startswith("uid=0(root) gid=0(root)")  # root of the job's own user namespace
    assert listing == ["bin", "dev", "etc", "job", "lib", "lib64", "proc", "sbin", "sys", "tmp",
                       "usr", "work"], proc.stdout
    (record,) = records()[before:]
    assert (record["backend"], record["exit_code"]) == ("gvisor", 3)
    # The job unit's memory limit is set, and reported enforced only where the unit's cgroup
    # has a memory controller (the unified lab has none: tests/integration/limits proves it).
    memory = record["memory"]
    controller = Path("/sys/fs/cgroup/cgroup.subtree_control").read_text().split()
    assert memory["max_bytes"] > 0, memory
    assert memory["enforced"] == ("memory" in controller), memory
    if not memory["enforced"]:
        assert "no memory controller" in memory["note"], memory
    started = sh("journalctl", "--no-pager", "-o", "cat", "-u", "agentgw-job@*").stdout
    assert "Started agentgw-job@" in started
    took = []
    for _ in range(10):
        t0 = time.monotonic()
        result, _ = call(SOCKETS / "api.sock", JobRequest(argv=("true",)), wait_s=30)
        took.append(time.monotonic() - t0)
        assert result.exit_code == 0
    report = sh("systemd-analyze", "security", "agentgw-job@0-0-0.service").stdout
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)
    with capsys.disabled():
        print(f"\ngVisor exec of true through the broker: median {sorted(took)[5]:.3f} s, "
              f"max {max(took):.3f} s (10 runs); agentgw-job@.service: systemd-analyze "
              f"security exposure {score.group(1) if score else report}")


def test_two_profiles_jobs_run_as_different_uids_and_reach_nothing(broker: int) -> None:
    """api's job holds a secret (a file, /tmp) while core's job runs: the two job units run
    under two dynamic uids (neither root nor the broker's). Inside core's job, api's files (by
    their host path), the broker's state and the sockets do not exist; on the host, core's job
    uid is refused each of them (what a job that escaped gVisor would be)."""
    if serving_on() != "gvisor":
        pytest.skip("the broker does not run gVisor here (KVM works)")
    secret = Path("/root/secret.txt")
    secret.write_text("secret-api\n")
    holder = subprocess.Popen(  # noqa: S603 - fixed argv
        [AGENTGW, "exec", "--file", f"{secret}:secret.txt", "api", "--",
         "sh", "-c", "echo secret-api > /tmp/b; sleep 6"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        (api_unit, api_uid), = wait_for(busy_units).items()
        api_main = sh("systemctl", "show", "-P", "MainPID", api_unit, check=True).stdout.strip()
        (api_work,) = wait_for(lambda: list(Path(f"/proc/{api_main}/root").glob(JOB_WORK)))
        targets = [str(api_work / "secret.txt"), str(EXECS), JOB_SOCKET,
                   str(SOCKETS / "api.sock"), str(SOCKETS / "core.sock")]
        probe = subprocess.Popen(  # noqa: S603 - fixed argv
            [AGENTGW, "exec", "core", "--", "sh", "-c",
             'for p in "$@" /tmp/b /var/lib/agentgw /etc/agentgw /run/agentgw; do '
             'test -e "$p" && echo "FOUND $p"; done; sleep 2; echo done', "probe", *targets],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        uids = wait_for(lambda: (lambda found: found if len(found) == 2 else None)(busy_units()))
        core_uid = next(uid for name, uid in uids.items() if name != api_unit)
        core_unit = next(name for name in uids if name != api_unit)
        as_core = ("setpriv", f"--reuid={core_uid}", f"--regid={core_uid}", "--clear-groups",
                   "/usr/bin/python3", "-I", "-c", ESCAPED, *targets)
        escaped = sh(*as_core, check=True).stdout
        main = sh("systemctl", "show", "-P", "MainPID", core_unit, check=True).stdout.strip()
        in_unit = sh("nsenter", "-t", main, "-m", "-n", *as_core, check=True).stdout
        out, err = probe.communicate(timeout=60)
    finally:
        holder.communicate(timeout=60)
        secret.unlink()
    assert (probe.returncode, out) == (0, "done\n"), err
    assert holder.returncode == 0
    broker_uid = pwd.getpwnam(BROKER_USER).pw_uid
    assert len({api_uid, core_uid, 0, broker_uid}) == 4, uids
    assert [line.split()[1] for line in escaped.splitlines()] == ["13"] * len(targets), escaped
    # In core's unit's own mount and network namespaces: api's /tmp is not there (ENOENT), the
    # rest is hidden (InaccessiblePaths=) or refused: never reached.
    errnos = [line.split()[1] for line in in_unit.splitlines()]
    assert len(errnos) == len(targets) and set(errnos) <= {"2", "13"}, in_unit


def test_warm_jobs_are_served_by_prepared_units_each_its_own_uid(
    broker: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """The broker keeps sandbox.pool_size (1) job units prepared: a job that fits runs on one
    (answered warm, the record's pool counts it), each job on a unit of its own dynamic uid;
    through a prepared unit the timeout kills the job and answers timed_out with its output so
    far, the output cap holds, and a child left in the background does not delay the answer."""
    if serving_on() != "gvisor":
        pytest.skip("the broker does not run gVisor here (KVM works)")
    cases = [
        (JobRequest(argv=("sh", "-c", "echo hi; (sleep 20) & exit 4")), (4, b"hi\n", False)),
        (JobRequest(argv=("sh", "-c", "echo before; sleep 30"), timeout_s=1),
         (124, b"before\n", True)),
        (JobRequest(argv=("head", "-c", "100000", "/dev/zero"), max_output=100),
         (0, b"\0" * 100, False)),
    ]
    served: dict[str, int] = {}
    took = []
    for request, (code, out, timed_out) in cases:
        (unit, uid), = wait_for(prepared_units).items()
        t0 = time.monotonic()
        result, _ = call(SOCKETS / "api.sock", request, wait_s=30)
        took.append(time.monotonic() - t0)
        assert (result.exit_code, result.stdout, result.timed_out) == (code, out, timed_out)
        assert result.warm and result.backend == "gvisor"
        assert result.stdout_truncated == (request.max_output == 100)
        served[unit] = uid
        assert records()[-1]["warm"] is True
    assert took[0] < 3.0 and took[1] < 1.0 + 3.0, took  # not 20 s, not 30 s
    broker_uid = pwd.getpwnam(BROKER_USER).pw_uid
    assert len(served) == len(cases), served  # a unit per job
    assert len(set(served.values()) | {0, broker_uid}) == len(cases) + 2, served
    pool = records()[-1]["pool"]
    assert pool["size"] == 1 and pool["served_warm"] >= len(cases), pool
    with capsys.disabled():
        print(f"\nwarm jobs through the broker: {[round(t, 3) for t in took]} s; pool {pool}")


def test_a_job_no_prepared_unit_fits_starts_its_sandbox_in_a_spare_unit(
    broker: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """The broker keeps sandbox.spare_units (2) job units started with no sandbox: a job of
    another shape than the pool's (memory_mb 128) runs in one of them -- a unit already up,
    with its uid, before the request -- answered cold, and the record's pool counts it; the
    spare is replaced. One fitting none of them at once (three jobs of 2 s) runs in a new unit."""
    if serving_on() != "gvisor":
        pytest.skip("the broker does not run gVisor here (KVM works)")
    spares = wait_for(lambda: (lambda found: found if len(found) >= 2 else None)(spare_units()))
    before = records()[-1]["pool"]["served_spare"] if EXECS.exists() and records() else 0
    request = JobRequest(argv=("sh", "-c", "sleep 1; echo spare"), memory_mb=128)
    answers: list[Any] = []
    t0 = time.monotonic()
    caller = threading.Thread(target=lambda: answers.append(
        call(SOCKETS / "api.sock", request, wait_s=30)[0]))
    caller.start()
    try:
        (unit, uid), = wait_for(busy_units).items()
    finally:
        caller.join(60)
    took = time.monotonic() - t0
    (result,) = answers
    assert (result.exit_code, result.stdout, result.warm) == (0, b"spare\n", False), result
    assert spares.get(unit) == uid, (unit, spares)  # up, with no sandbox, before the request
    pool = records()[-1]["pool"]
    assert pool["spares"] == 2 and pool["served_spare"] == before + 1, pool
    assert records()[-1]["memory"]["max_bytes"] == (128 + 64) << 20  # the request's shape
    wait_for(lambda: unit not in job_uids())  # its teardown
    wait_for(lambda: (lambda found: found if len(found) >= 2 else None)(spare_units()))
    with capsys.disabled():
        print(f"\njob in a spare unit (1 s sleep): {took:.3f} s; pool {pool}")


def test_a_gvisor_job_unit_has_neither_the_kvm_group_nor_dev_kvm(broker: int) -> None:
    """gVisor jobs run in agentgw-job@ units, which have no /dev/kvm (microVM jobs go to
    agentgw-vmjob@, the same unit with it): a held unit's process is not in the kvm group and
    /dev/kvm is absent from its namespace; as its uid (with its groups) the host's is refused."""
    if serving_on() != "gvisor":
        pytest.skip("the broker does not run gVisor here (KVM works)")
    units = wait_for(job_uids)
    kvm = str(os.stat("/dev/kvm").st_gid)
    for name, uid in units.items():
        assert name.startswith("agentgw-job@"), name
        main = sh("systemctl", "show", "-P", "MainPID", name, check=True).stdout.strip()
        groups = status_of(int(main))["Groups"].split()
        assert kvm not in groups, (name, groups)
        assert sh("nsenter", "-t", main, "-m", "test", "-e", "/dev/kvm").returncode == 1
        with_groups = f"--groups={','.join(groups)}" if groups else "--clear-groups"
        as_unit = sh("setpriv", f"--reuid={uid}", f"--regid={uid}", with_groups,
                     "/usr/bin/python3", "-I", "-c", ESCAPED, "/dev/kvm", check=True).stdout
        assert as_unit.split() == ["/dev/kvm", "13"], as_unit


# In the guest: membarrier(2)'s MEMBARRIER_CMD_QUERY (what the Sentry offers) and the CPU count.
MEMBARRIER = ("import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
              "print(libc.syscall(324, 0, 0), os.cpu_count())")


def test_a_job_units_runsc_goes_without_membarrier_and_a_one_cpu_job_is_pinned(broker: int) -> None:
    """agentgw-job@.service refuses membarrier(2) with ENOSYS (each runsc process would wait
    an RCU grace period for it as it starts): the Sentry found none on the host, so the
    guest's query offers no global barrier (bit 0), while the same job run by root outside a
    unit is offered it. A 1-CPU job's sandbox is pinned to one of the host's CPUs: the guest
    counts one (the lab has two)."""
    if serving_on() != "gvisor":
        pytest.skip("the broker does not run gVisor here (KVM works)")
    assert (os.cpu_count() or 1) >= 2
    result, _ = call(SOCKETS / "api.sock", JobRequest(argv=("python3", "-c", MEMBARRIER)),
                     wait_s=60)
    assert result.exit_code == 0, result
    mask, cpus = (int(word) for word in result.stdout.split())
    direct = gvisor.run_plain(Job(argv=("python3", "-c", MEMBARRIER)))
    assert direct.exit_code == 0, direct
    direct_mask, direct_cpus = (int(word) for word in direct.stdout.split())
    assert (direct_mask & 1, mask & 1) == (1, 0), (direct_mask, mask)
    assert (cpus, direct_cpus) == (1, 1)


def test_core_is_served_within_a_job_while_api_floods(
    broker: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """api floods its socket (4 callers in a loop, 6 MiB requests, 2 s jobs); core's `true`
    completes within one api job's duration + 1 s every time, over 20 tries."""
    if serving_on() != "gvisor":
        pytest.skip("measured against the gVisor backend (TCG VMs take both cores here)")
    job_s = 2.0
    stop = threading.Event()
    flood = JobRequest(argv=("sh", "-c", f"sleep {job_s:g}; wc -c"), stdin=b"x" * (6 << 20),
                       timeout_s=10)

    def flooder() -> None:
        while not stop.is_set():
            try:
                call(SOCKETS / "api.sock", flood, wait_s=30)
            except (AgentgwError, OSError):
                time.sleep(0.05)  # 'busy' (over api's open requests): ask again

    threads = [threading.Thread(target=flooder) for _ in range(4)]
    for thread in threads:
        thread.start()
    took: list[float] = []
    try:
        time.sleep(1.0)
        for _ in range(20):
            started = time.monotonic()
            result, _ = call(SOCKETS / "core.sock", JobRequest(argv=("true",)), wait_s=30)
            took.append(time.monotonic() - started)
            assert result.exit_code == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    with capsys.disabled():
        print(f"\ncore's true under api's flood: max {max(took):.2f} s, "
              f"median {sorted(took)[10]:.2f} s over {len(took)}")
    assert max(took) <= job_s + 1.0, took


def test_without_gvisor_and_emulation_exec_is_refused_with_the_reason(broker: int) -> None:
    """allow_emulation: false and runsc gone (renamed in the lab's throw-away root): the broker
    still starts and answers, and exec is refused with the reasons; restored afterwards."""
    if serving_on() == "kvm":
        pytest.skip("KVM works on this host: nothing to refuse")
    config, runsc, hidden = ETC / "agentgw.yaml", Path("/usr/bin/runsc"), Path("/usr/bin/.runsc")
    text = config.read_text()
    assert "allow_emulation: true" in text
    try:
        config.write_text(text.replace("allow_emulation: true", "allow_emulation: false"))
        runsc.rename(hidden)
        sh("systemctl", "restart", UNIT, check=True)
        status = sh("systemctl", "show", "-P", "StatusText", UNIT).stdout
        proc = sh(AGENTGW, "exec", "api", "--", "true", timeout=60)
    finally:
        config.write_text(text)
        if hidden.exists():
            hidden.rename(runsc)
        sh("systemctl", "restart", UNIT, check=True)
    assert proc.returncode == 1, (status, proc.stderr)
    assert "error: the sandbox will not run jobs: no sandbox backend: KVM skipped" in proc.stderr
    assert "gVisor skipped, runsc (gVisor) is not installed" in proc.stderr
    assert "sandbox.allow_emulation is false" in proc.stderr
    assert serving_on() == "gvisor"


NEW = "fresh"
NEW_IP = "127.77.0.9"


def test_a_profile_added_later_is_served_without_restarting_the_broker(
    broker: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the broker running, a NEW profile (gateways/fresh.yaml, `agentgw apply`): systemd
    made fresh.sock 0660 root:agent-fresh before the broker saw a connection on it, `agentgw
    exec fresh -- true` works through its relay, the broker's MainPID is unchanged and its
    bounding set empty; agent-core can connect neither to fresh.sock nor to control.sock
    (EACCES); the relay unit's exposure is printed and within the threshold. `apply --prune`
    stops the socket again."""
    config = ETC / "gateways" / f"{NEW}.yaml"
    text = (REPO / "gateways" / "core.yaml").read_text()
    config.write_text(re.sub(r"(?m)^listen: .*$", f"listen: {NEW_IP}:{free_port(NEW_IP)}", text))
    sock = SOCKETS / f"{NEW}.sock"
    before = int(sh("systemctl", "show", "-P", "MainPID", UNIT, check=True).stdout)
    try:
        assert not sock.exists() and before > 0
        agentgw("apply")
        st = sock.stat()
        group = pwd.getpwnam(f"agent-{NEW}").pw_gid
        assert (stat.S_ISSOCK(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (
            True, 0o660, 0, group)
        assert not records() or all(r["profile"] != NEW for r in records())
        proc = sh(AGENTGW, "exec", NEW, "--", "sh", "-c", "echo relayed", timeout=60)
        assert (proc.returncode, proc.stdout) == (0, "relayed\n"), proc.stderr
        assert records()[-1]["profile"] == NEW
        pid = int(sh("systemctl", "show", "-P", "MainPID", UNIT, check=True).stdout)
        assert pid == before
        assert status_of(pid)["CapBnd"] == "0000000000000000"
        for target in (sock, SOCKETS / "control.sock"):
            as_core = sh("setpriv", "--reuid=agent-core", "--regid=agent-core", "--clear-groups",
                         "/usr/bin/python3", "-I", "-c", CALLER, str(target), check=True)
            assert as_core.stdout.strip() == "connect-errno 13", target
        relay = f"agentgw-sandbox-relay@{NEW}.service"
        report = sh("systemd-analyze", "security", relay).stdout
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)
        assert match is not None, report
        with capsys.disabled():
            print(f"\n{relay}: systemd-analyze security exposure {match.group(1)}")
        assert float(match.group(1)) <= HostConfig().exposure_threshold, report
        relay_status = status_of(int(sh("systemctl", "show", "-P", "MainPID", relay,
                                        check=True).stdout))
        assert (relay_status["CapEff"], relay_status["CapBnd"]) == ("0" * 16, "0" * 16)
    finally:
        config.unlink()
        agentgw("apply", "--prune", check=False)
    assert not sock.exists()


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


def test_held_units_whose_mounts_the_host_undid_end_and_a_new_unit_runs_the_job(
    broker: int,
) -> None:
    """/var/cache/agentgw removed on the host and made again (moved away and back) while the
    broker holds units: Linux detaches the units' TemporaryFileSystem= there, so a held unit
    would see the host's directory. Each held unit sees its mount table change and ends ('its
    mounts changed while it waited', in its journal); the next job runs, and answers, in a new
    unit, whose namespace is built afresh: inside it, /var/cache/agentgw holds the image only."""
    if serving_on() != "gvisor":
        pytest.skip("the broker does not run gVisor here (KVM works)")
    wait_for(lambda: (lambda found: found if len(found) >= 2 else None)(spare_units()))
    held = set(job_uids())
    cache, hidden = Path("/var/cache/agentgw"), Path("/root/agentgw-cache-moved")
    shutil.move(cache, hidden)  # a copy: the overlay cannot rename a lower directory
    try:
        if cache.exists():
            cache.rmdir()  # the empty mount point systemd may have made for a unit meanwhile
        shutil.move(hidden, cache)  # a new directory where the units' tmpfs was
        wait_for(lambda: not held & set(job_uids()))  # every held unit ended by itself
        request = JobRequest(argv=("sh", "-c", "sleep 1; echo fresh"), memory_mb=128)
        answers: list[Any] = []
        caller = threading.Thread(target=lambda: answers.append(
            call(SOCKETS / "api.sock", request, wait_s=60)[0]))
        caller.start()
        try:
            (unit, _), = wait_for(busy_units).items()
            main = sh("systemctl", "show", "-P", "MainPID", unit, check=True).stdout.strip()
            inside = sh("nsenter", "-t", main, "-m", "ls", "/var/cache/agentgw",
                        check=True).stdout.split()
        finally:
            caller.join(60)
    finally:
        if hidden.exists():
            if cache.exists():
                cache.rmdir()
            shutil.move(hidden, cache)
    (result,) = answers
    assert (result.exit_code, result.stdout) == (0, b"fresh\n"), result
    assert unit not in held and inside == ["sandbox"], (unit, held, inside)
    journal = sh("journalctl", "--no-pager", "-o", "cat", "-u", "agentgw-job@*").stdout
    ended = [line for line in journal.splitlines() if "changed while it waited" in line]
    assert len(ended) >= len(held), journal[-2000:]
    assert all("/var/cache/agentgw," in line for line in ended[-len(held):]), ended


def test_stopping_leaves_systemds_sockets_and_no_vm(broker: int) -> None:
    """systemctl stop: no QEMU of the broker is left; the profiles' sockets are systemd's
    (agentgw-sandbox-relay@<p>.socket) and stay, 0660 root:agent-<p>."""
    sh("systemctl", "stop", UNIT, CONTROL_UNIT, check=True)
    assert broker_qemus() == []
    st = (SOCKETS / "api.sock").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o660, 0)
