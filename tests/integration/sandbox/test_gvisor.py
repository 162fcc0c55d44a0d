"""The gVisor backend for real (runsc, ptrace platform): chosen by the self-test when KVM fails,
runs exec with the job's exit code, refuses without a backend, and one job cannot see another's
files, the broker's state or the sockets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agentgw.sandbox import backend, gvisor, image
from agentgw.sandbox.job import JobRequest, JobResult

pytestmark = pytest.mark.integration

AGENTGW = "/opt/agentgw/venv/bin/agentgw"


@pytest.fixture(scope="module", autouse=True)
def needs_runsc() -> None:
    if gvisor.runsc_path() is None:
        pytest.skip("needs runsc (make setup installs it)")


def _env(cache: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "AGENTGW_SANDBOX_CACHE": str(cache), **extra}


def test_selftest_picks_gvisor_when_kvm_fails_and_says_why(
    sandbox_cache: Path, sandbox_image: image.Image
) -> None:
    """Best first: KVM when it boots a VM, else gVisor, with KVM's failure in the reason."""
    why_not_kvm = backend._try_kvm(sandbox_image, backend.pick_machine())
    proc = subprocess.run([AGENTGW, "sandbox", "selftest", "--redetect", "--json"],
                          capture_output=True, env=_env(sandbox_cache), timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    if not why_not_kvm:
        assert record["backend"] == "kvm"
        return
    assert (record["backend"], record["boundary"]) == ("gvisor", "user-space-kernel")
    assert record["reason"].startswith("gVisor (ptrace): KVM skipped, ")
    assert record["differs"] and record["guest_kernel"] != record["host_kernel"]


def test_exec_runs_under_gvisor_and_exits_with_the_jobs_code(sandbox_cache: Path) -> None:
    """``agentgw exec api -- sh -c 'id; ...; exit 3'`` runs in gVisor as a job uid, exits 3."""
    subprocess.run([AGENTGW, "sandbox", "selftest", "--json"], capture_output=True,
                   env=_env(sandbox_cache), timeout=120, check=True)
    proc = subprocess.run(
        [AGENTGW, "exec", "--direct", "api", "--", "sh", "-c", "id -u; uname -r; exit 3"],
        capture_output=True, env=_env(sandbox_cache), timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    uid, kernel = proc.stdout.decode().split()
    assert gvisor.JOB_UID_BASE <= int(uid) < gvisor.JOB_UID_BASE + gvisor.JOB_UID_COUNT
    assert kernel != os.uname().release


def test_without_gvisor_and_emulation_exec_is_refused_with_the_reason(
    sandbox_cache: Path, tmp_path: Path
) -> None:
    """runsc gone (a PATH without it), allow_emulation false (the default): refused, exit 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for entry in Path("/usr/bin").iterdir():
        if entry.name != "runsc":
            (bin_dir / entry.name).symlink_to(entry)
    cache = tmp_path / "cache"
    shutil.copytree(sandbox_cache, cache)
    # A root of its own: no host config there, so allow_emulation is its default (false)
    # whatever an earlier module wrote into the lab's /etc/agentgw.
    (tmp_path / "root").mkdir()
    env = _env(cache, PATH=f"{bin_dir}:/usr/sbin:/sbin", AGENTGW_ROOT=str(tmp_path / "root"))
    proc = subprocess.run([AGENTGW, "exec", "--direct", "api", "--", "true"],
                          capture_output=True, env=env, timeout=120)
    err = proc.stderr.decode()
    if "KVM: a VM booted" in err or proc.returncode == 0:
        pytest.skip("KVM works on this host: nothing to refuse")
    assert proc.returncode == 1, err
    assert "error: the sandbox will not run jobs: no sandbox backend: KVM skipped" in err
    assert "gVisor skipped, runsc (gVisor) is not installed" in err
    assert "sandbox.allow_emulation is false" in err


def _in_thread(request: JobRequest, out: list[JobResult]) -> threading.Thread:
    thread = threading.Thread(target=lambda: out.append(gvisor.run_job(request)))
    thread.start()
    return thread


def test_two_jobs_run_as_different_uids_and_cannot_reach_each_other() -> None:
    """Job B holds a secret in its /work and /tmp while job A looks for it, and for the broker's
    state and sockets: A finds none of them; the two ran under different uids."""
    holder: list[JobResult] = []
    b = _in_thread(JobRequest(
        argv=("sh", "-c", "echo secret-b > /tmp/b; id -u; sleep 3"),
        files={"secret.txt": b"secret-b\n"}, timeout_s=10), holder)
    probe = (
        "id -u; sleep 1; "
        "for p in /tmp/b /work/secret.txt /run/agentgw/sandbox /var/lib/agentgw "
        "/var/lib/agentgw/sandbox/execs.jsonl /etc/agentgw /opt/agentgw /proc/1/root/tmp/b; do "
        "  if test -e $p; then echo FOUND $p; fi; done; "
        "cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c 'echo secre[t]-b' || true"
    )
    seen = gvisor.run_job(JobRequest(argv=("sh", "-c", probe), timeout_s=10))
    b.join(20)
    assert seen.exit_code == 0, seen.stderr
    lines = seen.stdout.decode().split()
    uid_a, tail = lines[0], lines[1:]
    assert tail == ["0"], seen.stdout  # no FOUND line, no process of job B visible
    assert holder and holder[0].exit_code == 0, holder
    uid_b = holder[0].stdout.decode().split()[0]
    assert uid_a != uid_b
    assert {int(uid_a), int(uid_b)} <= set(range(gvisor.JOB_UID_BASE,
                                                 gvisor.JOB_UID_BASE + gvisor.JOB_UID_COUNT))


def _runsc_left(top: Path) -> list[str]:
    """runsc processes of the sandbox in ``top`` (its state and bundle) still on the host."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(top) in (entry / "cmdline").read_bytes().decode():
                found.append(entry.name)
        except OSError:
            continue
    return found


def test_a_prepared_sandbox_answers_when_its_job_exits_and_is_gone_after_close() -> None:
    """Prepared before its job (the waiting wrapper), a job that leaves a child in the background
    and closes its stdout is answered as soon as it exits, not after the child; at the timeout
    the sandbox is killed and the output so far answered; a sandbox killed before its job says
    so (NotStarted, the broker runs the job elsewhere); nothing is left after close."""
    from agentgw.sandbox.jobspec import Job, NotStarted, Prepare

    sandbox = gvisor.prepare(Prepare("gvisor"))
    assert len(_runsc_left(sandbox.top)) >= 2  # runsc run, its gofer and Sentry: seen
    try:
        outcome = sandbox.run(Job(argv=("sh", "-c", "echo hi; (sleep 30) & exec >&-; exit 5"),
                                  stdin=b"", timeout_s=20))
    finally:
        sandbox.close()
    assert (outcome.exit_code, outcome.stdout, outcome.timed_out) == (5, b"hi\n", False)
    assert outcome.duration_s < 5, outcome
    assert _runsc_left(sandbox.top) == [] and not sandbox.top.exists()

    sandbox = gvisor.prepare(Prepare("gvisor"))
    try:
        outcome = sandbox.run(Job(argv=("sh", "-c", "echo before; sleep 30"), timeout_s=1))
    finally:
        sandbox.close()
    assert (outcome.exit_code, outcome.stdout, outcome.timed_out) == (124, b"before\n", True)
    assert outcome.duration_s < 5, outcome
    assert _runsc_left(sandbox.top) == []

    sandbox = gvisor.prepare(Prepare("gvisor"))
    try:
        sandbox.kill()
        deadline = time.monotonic() + 10
        while _runsc_left(sandbox.top) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(NotStarted):
            sandbox.run(Job(argv=("true",)))
    finally:
        sandbox.close()
    assert _runsc_left(sandbox.top) == []
