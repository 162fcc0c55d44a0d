"""microVM jobs in job units of their own, on a real systemd (inside the lab): with
``allow_emulation: true`` and gVisor made unavailable (runsc renamed in the lab's throw-away
root), the broker serves TCG microVMs, each started by its own agentgw-vmjob@ unit (a DynamicUser
per job), never by the broker. Lean on CPU: this machine has 2 cores and a TCG boot takes ~2 s.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from agentgw.sandbox import jobclient
from agentgw.sandbox.job import JobRequest
from tests.integration.broker.test_broker_unit import (
    BROKER_USER,
    CONTROL_UNIT,
    ESCAPED,
    EXECS,
    JOB_SOCKET,
    SOCKETS,
    UNIT,
    api_port,
    broker_qemus,
    records,
    serving_on,
    status_of,
    wait_for,
)
from tests.integration.support import AGENTGW, ETC, sh

pytestmark = pytest.mark.integration
__all__ = ["api_port"]  # the profiles applied, api on a port of its own (a fixture)

RUNSC, HIDDEN = Path("/usr/bin/runsc"), Path("/usr/bin/.runsc")


@pytest.fixture(scope="module")
def tcg_broker(api_port: int) -> Iterator[int]:
    """The broker started with runsc gone and emulation allowed (the lab host's config): it
    detects TCG (KVM probed through a job unit: it fails its self-test here); its MainPID.
    runsc comes back and the broker is stopped afterwards."""
    assert "allow_emulation: true" in (ETC / "agentgw.yaml").read_text()
    try:
        RUNSC.rename(HIDDEN)
        sh("systemctl", "restart", UNIT, check=True, timeout=120)
        yield int(sh("systemctl", "show", "-P", "MainPID", UNIT, check=True).stdout)
    finally:
        sh("systemctl", "stop", UNIT, CONTROL_UNIT)
        if HIDDEN.exists():
            HIDDEN.rename(RUNSC)


def job_qemus() -> dict[int, str]:
    """Running VMs' QEMU processes (not a ``-machine help``) and the agentgw-vmjob@ unit each
    runs in (from its cgroup)."""
    found = {}
    for proc in psutil.process_iter(["name"]):
        if not (proc.info["name"] or "").startswith("qemu-system"):
            continue
        try:
            cgroup = Path(f"/proc/{proc.pid}/cgroup").read_text()
            if "-accel" not in proc.cmdline():
                continue
        except (OSError, psutil.Error):
            continue
        unit = next((part for part in cgroup.strip().split("/")
                     if part.startswith("agentgw-vmjob@")), "")
        found[proc.pid] = unit
    return found


def test_a_vm_waits_booted_in_a_job_unit_and_serves_one_job_warm(tcg_broker: int) -> None:
    """The warm path for VMs: the broker keeps sandbox.pool_size VM units prepared, each QEMU
    booted in its own agentgw-vmjob@ unit as that unit's dynamic uid before any job; an exec of
    the pool's shape is answered warm from one, whose VM is then gone (one job per VM)."""
    def prepared() -> dict[int, str]:
        return {pid: unit for pid, unit in job_qemus().items() if unit}

    waiting = wait_for(prepared, timeout=90)
    pid = next(iter(waiting))
    uid = psutil.Process(pid).uids().real
    assert uid not in (0, pwd.getpwnam(BROKER_USER).pw_uid)
    # Its QEMU runs from the prepare on; it is ready once booted (~2-4 s under TCG): an exec
    # before that runs cold, so try a few times, each after a boot's worth of waiting.
    for _ in range(4):
        time.sleep(4)
        before = len(records()) if EXECS.exists() else 0
        proc = sh(AGENTGW, "exec", "api", "--", "sh", "-c", "echo warm; exit 4", timeout=90)
        assert (proc.stdout, proc.returncode) == ("warm\n", 4), proc.stderr
        (record,) = records()[before:]
        assert record["backend"] == "tcg", record
        if record["warm"]:
            break
    assert record["warm"] is True, record
    assert record["pool"]["served_warm"] >= 1, record
    wait_for(lambda: not psutil.pid_exists(pid), timeout=30)
    assert broker_qemus() == []


def test_the_broker_serves_tcg_in_job_units_without_kvm_of_its_own(
    tcg_broker: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Status says tcg in job units; the broker has no kvm group and no /dev/kvm (its KVM probe
    ran in a job unit); `agentgw exec api -- sh -c 'echo hi; exit 3'` prints hi, exits 3, and
    the record says tcg; no QEMU ever ran as the broker's user. Prints the exec's time."""
    assert serving_on() == "tcg"
    status = sh("systemctl", "show", "-P", "StatusText", UNIT, check=True).stdout
    assert "in job units" in status, status
    kvm = os.stat("/dev/kvm").st_gid
    assert str(kvm) not in status_of(tcg_broker)["Groups"].split()
    assert sh("nsenter", "-t", str(tcg_broker), "-m", "test", "-e", "/dev/kvm").returncode == 1
    before = len(records()) if EXECS.exists() else 0
    started = time.monotonic()
    proc = sh(AGENTGW, "exec", "api", "--", "sh", "-c", "echo hi; exit 3", timeout=90)
    took = time.monotonic() - started
    assert (proc.stdout, proc.returncode) == ("hi\n", 3), proc.stderr
    (record,) = records()[before:]
    assert (record["backend"], record["exit_code"]) == ("tcg", 3)
    assert broker_qemus() == []
    with capsys.disabled():
        print(f"\nTCG exec through the broker and a job unit: {took:.2f} s "
              f"(the VM's job: {record['duration_s']} s)")


def test_without_the_image_cache_a_vm_job_is_refused_with_the_reason(tcg_broker: int) -> None:
    """/var/cache/agentgw gone (renamed in the lab's root): the job unit still starts (its
    TemporaryFileSystem= and BindReadOnlyPaths=- need no cache) and answers why; restored.
    128 MiB: not the shape of the broker's prepared VM (booted before), so the job runs cold."""
    cache, hidden = Path("/var/cache/agentgw"), Path("/root/agentgw-cache-hidden")
    try:
        shutil.move(cache, hidden)  # a copy: the overlay cannot rename a lower directory
        proc = sh(AGENTGW, "exec", "--memory", "128", "api", "--", "true", timeout=60)
    finally:
        if hidden.exists():
            if cache.exists():
                cache.rmdir()  # the empty mount point systemd may have made
            shutil.move(hidden, cache)
        # The units the broker holds lost their cache mounts with the move (each would refuse
        # its job, see unitns): a restart gives the next tests fresh ones.
        sh("systemctl", "restart", UNIT, check=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "no sandbox image in /var/cache/agentgw/sandbox" in proc.stderr, proc.stderr


def exec_in_background(profile: str, script: str, *files: str) -> subprocess.Popen[str]:
    extra = [arg for f in files for arg in ("--file", f)]
    return subprocess.Popen(  # noqa: S603 - fixed argv
        [AGENTGW, "exec", *extra, profile, "--", "sh", "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_profiles_vms_run_as_different_uids_and_reach_nothing(tcg_broker: int) -> None:
    """api's VM job (with an input file) and core's run at once: two QEMUs, each in its own
    agentgw-vmjob@ unit, as that unit's dynamic uid (neither root, the broker's nor each other's),
    with no capability, QEMU's seccomp filter and the kvm group. As core's QEMU's uid -- on the
    host, and inside core's unit's mount namespace -- api's VM's files (its initramfs, owned by
    api's uid in api's unit's tmpfs; the job itself goes over QEMU's stdin), api's QEMU (its
    memory, a signal), the broker's records and the sockets are refused or absent; core's unit
    sees only the image of agentgw's caches, and its own VM's dir only."""
    secret = Path("/root/secret.txt")
    secret.write_text("secret-api\n")
    api = exec_in_background("api", "sleep 7", f"{secret}:secret.txt")
    core = None
    try:
        (api_qemu, api_unit), = wait_for(job_qemus, timeout=60).items()
        core = exec_in_background("core", "sleep 3; echo done")
        qemus = wait_for(lambda: (lambda q: q if len(q) == 2 else None)(job_qemus()), 60)
        core_qemu = next(pid for pid in qemus if pid != api_qemu)
        core_unit = qemus[core_qemu]
        uids = {pid: psutil.Process(pid).uids().real for pid in qemus}
        unit_uids = {pid: int(sh("systemctl", "show", "-P", "UID", qemus[pid],
                                 check=True).stdout) for pid in qemus}
        statuses = {pid: status_of(pid) for pid in qemus}
        api_tmp = Path(f"/proc/{api_qemu}/root/run/agentgw-job")
        found = list(api_tmp.glob("agentgw-vm-*/initrd.cpio"))
        assert len(found) == 1, (found, api.poll(), qemus, sh("ls", "-laR", str(api_tmp)).stdout,
                                 psutil.Process(api_qemu).cmdline())
        (api_initrd,) = found
        initrd_owner = api_initrd.stat().st_uid  # api's VM's initramfs (its nonce: the framing)
        targets = [str(api_initrd), f"/proc/{api_qemu}/mem", f"kill:{api_qemu}", str(EXECS),
                   JOB_SOCKET, str(SOCKETS / "api.sock"), str(SOCKETS / "core.sock")]
        core_uid = uids[core_qemu]
        as_core = ("setpriv", f"--reuid={core_uid}", f"--regid={core_uid}", "--groups=kvm",
                   "/usr/bin/python3", "-I", "-c", ESCAPED, *targets)
        escaped = sh(*as_core, check=True).stdout
        in_unit = sh("nsenter", "-t", str(core_qemu), "-m", "-n", *as_core, check=True).stdout
        caches = sh("nsenter", "-t", str(core_qemu), "-m", "ls", "/var/cache/agentgw",
                    check=True).stdout.split()
        core_dirs = [p.name for p in
                     Path(f"/proc/{core_qemu}/root/run/agentgw-job").glob("agentgw-vm-*")]
        api_out, api_err = api.communicate(timeout=60)
        core_out, core_err = core.communicate(timeout=60)
    finally:
        for proc in (api, core):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
        secret.unlink()
    assert (api.returncode, core.returncode, core_out) == (0, 0, "done\n"), (api_err, core_err)
    assert api_unit != core_unit and all(u.startswith("agentgw-vmjob@") for u in qemus.values())
    broker_uid = pwd.getpwnam(BROKER_USER).pw_uid
    assert uids == unit_uids and len({*uids.values(), 0, broker_uid}) == 4, (uids, unit_uids)
    assert initrd_owner == uids[api_qemu]
    kvm = str(os.stat("/dev/kvm").st_gid)
    for status in statuses.values():
        assert (status["CapEff"], status["Seccomp"], status["NoNewPrivs"],
                kvm in status["Groups"].split()) == ("0" * 16, "2", "1", True), status
    errnos = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in escaped.splitlines()}
    assert list(errnos) == targets, escaped
    assert errnos[f"kill:{api_qemu}"] == "1" and "REACHED" not in errnos.values(), escaped
    inside = [line.rsplit(" ", 1)[1] for line in in_unit.splitlines()]
    assert len(inside) == len(targets) and set(inside) <= {"1", "2", "13"}, in_unit
    assert caches == ["sandbox"] and len(core_dirs) == 1, (caches, core_dirs)
    assert broker_qemus() == []


def test_a_kvm_vm_opens_dev_kvm_in_its_unit(tcg_broker: int) -> None:
    """A prepare for kvm on the job socket (as the broker's KVM probe sends it): its QEMU runs
    -accel kvm as the unit's dynamic uid with /dev/kvm open (DeviceAllow=, BindPaths=,
    SupplementaryGroups=kvm at work); the answer is the job's or, where KVM guests hang (this
    machine), 'did not become ready'."""
    path = jobclient.socket_path(backend="kvm")  # agentgw-vmjob.socket
    answers: list[object] = []
    run = jobclient.runner(path, "kvm")

    def probe() -> None:
        try:
            answers.append(run(JobRequest(argv=("true",), timeout_s=5.0, memory_mb=128)))
        except Exception as exc:  # noqa: BLE001 - the test reads what came back
            answers.append(exc)

    def opened_kvm(qemu: int) -> bool:
        try:
            return any(os.readlink(f) == "/dev/kvm" for f in Path(f"/proc/{qemu}/fd").iterdir())
        except OSError:
            return False

    def kvm_qemus() -> dict[int, str]:  # not the broker's prepared TCG VM
        found = {}
        for pid, unit in job_qemus().items():
            try:
                if "kvm" in psutil.Process(pid).cmdline():
                    found[pid] = unit
            except psutil.Error:
                pass
        return found

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        (qemu, unit), = wait_for(kvm_qemus, timeout=30).items()
        cmdline = psutil.Process(qemu).cmdline()
        uid = psutil.Process(qemu).uids().real
        unit_uid = int(sh("systemctl", "show", "-P", "UID", unit, check=True).stdout)
        wait_for(lambda: opened_kvm(qemu), timeout=5)
    finally:
        thread.join(60)
    assert cmdline[cmdline.index("-accel") + 1] == "kvm", cmdline
    assert uid == unit_uid != 0
    (answer,) = answers
    assert getattr(answer, "exit_code", None) == 0 or "did not become ready" in str(answer)
