"""The microVM job unit's pure parts: a prepare line names a microVM backend or is refused; a job
crosses to the VM path and back unchanged; a job of another shape than its VM is refused and
the VM killed; the job unit dispatches kvm/tcg to vmunit; the broker's client sends prepare then
job, reads ready then answer, waits a VM's boot on top of the job; the image is published
readable to the job units' dynamic users."""

from __future__ import annotations

import io
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentgw.errors import AgentgwError
from agentgw.sandbox import image, jobclient, jobunit, vmunit
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.jobspec import (
    Job,
    Outcome,
    Prepare,
    parse_job,
    parse_ready,
    render_prepare,
)
from agentgw.sandbox.protocol import BrokerError, parse_response
from agentgw.sandbox.vm import BOOT_BUDGET_S, Vm, job_window

OUTCOME = Outcome(exit_code=3, stdout=b"\x00o", stderr=b"e", stdout_truncated=False,
                  stderr_truncated=True, timed_out=False, duration_s=0.5, detail="d")


def test_only_kvm_and_tcg_are_microvm_backends() -> None:
    assert (vmunit.check_accel("kvm"), vmunit.check_accel("tcg")) == ("kvm", "tcg")
    for name in ("gvisor", "KVM", ""):
        with pytest.raises(ValueError, match="not a microVM backend"):
            vmunit.check_accel(name)


def test_a_job_crosses_to_the_vm_path_and_back_unchanged() -> None:
    job = Job(argv=("sh", "-c", "cat x"), stdin=b"\xff", files={"in/x": b"\x00"}, timeout_s=4.0,
              memory_mb=128, cpus=2, max_output=7, nproc=64)
    request = vmunit.request_of(job)
    assert parse_job(request.model_dump_json().encode()) == job
    assert vmunit.outcome_of(JobResult(backend="tcg", **OUTCOME.__dict__)) == OUTCOME


@dataclass
class FakeVm:
    closed: int = 0
    pid: int = 1

    def close(self) -> None:
        self.closed += 1


@dataclass
class FakeWarm:
    vm: FakeVm
    memory_mb: int = 256
    cpus: int = 1


def test_a_job_of_another_shape_than_its_vm_is_refused_and_the_vm_killed() -> None:
    warm = FakeWarm(FakeVm())
    prepared = vmunit.PreparedVm(warm)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prepared with 256 MB x 1"):
        prepared.run(Job(argv=("true",), memory_mb=512))
    assert warm.vm.closed == 1


def test_the_job_unit_sends_kvm_and_tcg_to_vmunit(monkeypatch: pytest.MonkeyPatch) -> None:
    """tcg: vmunit prepares; the answer names tcg; the sandbox is closed. An unknown backend
    is a bad request; a VM that does not boot is a failure line, and no job is read."""
    seen: list[Prepare] = []

    class Done:
        closed = False

        def run(self, job: Job) -> Outcome:
            return OUTCOME

        def close(self) -> None:
            Done.closed = True

    def prepare(spec: Prepare) -> Done:
        seen.append(spec)
        if spec.backend == "kvm":
            raise AgentgwError("a warm VM did not become ready", hint="hung")
        return Done()

    monkeypatch.setattr(vmunit, "prepare", prepare)
    job = jobclient.job_line(JobRequest(argv=("true",), memory_mb=128))
    out = io.BytesIO()
    tcg = render_prepare(Prepare("tcg", memory_mb=128)) + job
    assert jobunit.serve_one(io.BytesIO(tcg), out) == 0
    ready, answer, end = out.getvalue().split(b"\n")
    parse_ready(ready)
    result, _ = parse_response(answer)
    assert (result.backend, result.exit_code, Done.closed, end) == ("tcg", 3, True, b"")
    assert seen == [Prepare("tcg", memory_mb=128)]
    unknown = io.BytesIO()
    assert jobunit.serve_one(io.BytesIO(b'{"prepare": {"backend": "xen"}}\n' + job),
                             unknown) == 1
    assert b"unknown sandbox backend 'xen'" in unknown.getvalue()
    hung = io.BytesIO()
    assert jobunit.serve_one(io.BytesIO(b'{"prepare": {"backend": "kvm"}}\n' + job), hung) == 1
    with pytest.raises(BrokerError, match="did not become ready"):
        parse_response(hung.getvalue())


def test_the_client_sends_the_requests_shape_then_the_request() -> None:
    request = JobRequest(argv=("true",), memory_mb=512, cpus=2, nproc=32)
    assert jobclient.shape_of(request, "kvm") == Prepare("kvm", memory_mb=512, cpus=2, nproc=32)
    line, end = jobclient.job_line(request).split(b"\n")
    assert (JobRequest.model_validate_json(line), end) == (request, b"")


def test_the_broker_waits_for_a_vms_boot_and_its_job() -> None:
    """A prepared unit may take the slowest boot budget; a job the VM's job window."""
    request = JobRequest(argv=("true",), timeout_s=5.0)
    assert jobclient.READY_WAIT_S >= max(BOOT_BUDGET_S.values()) + 10
    assert request.timeout_s + jobclient.SLACK_S >= job_window(request) + 10


def test_the_image_is_published_readable_to_every_job_user(tmp_path: Path) -> None:
    cache, final = tmp_path / "cache", tmp_path / "cache" / "6.1"
    final.mkdir(parents=True)
    for name in ("vmlinux", "base.cpio", "manifest.json"):
        (final / name).write_bytes(b"x")
        (final / name).chmod(0o600)
    for d in (final, cache):
        d.chmod(0o700)
    image.publish(cache, final)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (cache, final, *final.iterdir())}
    assert modes == {"cache": 0o755, "6.1": 0o755, "vmlinux": 0o644, "base.cpio": 0o644,
                     "manifest.json": 0o644}


def test_a_vm_is_closed_once_whichever_threads_close_it(tmp_path: Path) -> None:
    """The job unit may close its VM from the job's thread and the broker-gone watcher at once:
    the process is killed and reaped, its dir removed, and every call returns."""
    work = tmp_path / "vm"
    work.mkdir()
    vm = Vm(["sleep", "30"], work, limit=1024)
    threads = [threading.Thread(target=vm.close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    vm.close()
    assert ([t.is_alive() for t in threads], vm.alive(), work.exists()) == (
        [False] * 4, False, False)
