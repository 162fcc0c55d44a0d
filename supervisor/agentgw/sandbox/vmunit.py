"""A QEMU microVM job inside its own job unit (agentgw-job@.service), the unit's side.

The broker no longer starts QEMU: every VM job is a connection to ``agentgw-job.socket`` and so
an agentgw-job@ unit of its own, a DynamicUser with its own private /tmp and tmpfs, and its own
memory, task and CPU limits. :mod:`.jobunit` reads the connection's prepare line and calls
:func:`prepare` here for a ``kvm`` or ``tcg`` backend: a VM of that shape boots on the image
cache (bound read-only into the unit) and waits on its channel (``vm.start_warm``); its job then
runs in it (``vm.run_warm``) and the VM is killed. One VM, one job, one uid: a guest that
escapes QEMU holds only the unit's dynamic user, which can reach no other job's files, the
broker's state or the sockets.

pydantic (``JobRequest``) is fine on this path, a VM boot costs far more than its import; it is
imported here, lazily from :mod:`.jobunit`, so the gVisor path stays on the standard library.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from agentgw.sandbox import backend, image
from agentgw.sandbox.job import Accel, JobRequest, JobResult
from agentgw.sandbox.jobspec import Job, Outcome, Prepare
from agentgw.sandbox.vm import Machine, WarmVm, host_tsc_khz, run_warm, start_warm

ACCELS = ("kvm", "tcg")


def check_accel(name: str) -> Accel:
    """The QEMU accelerator a prepare line names, or ValueError."""
    if name not in ACCELS:
        raise ValueError(f"prepare.backend: {name!r} is not a microVM backend "
                         f"({', '.join(ACCELS)})")
    return cast(Accel, name)


def request_of(job: Job) -> JobRequest:
    """The job as the VM path takes it (validated again: the guest's limits come from it)."""
    return JobRequest(
        argv=job.argv, stdin=job.stdin, files=dict(job.files), timeout_s=job.timeout_s,
        memory_mb=job.memory_mb, cpus=job.cpus, max_output=job.max_output, nproc=job.nproc,
    )


def outcome_of(result: JobResult) -> Outcome:
    return Outcome(
        exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr,
        stdout_truncated=result.stdout_truncated, stderr_truncated=result.stderr_truncated,
        timed_out=result.timed_out, duration_s=result.duration_s, detail=result.detail,
    )


class PreparedVm:
    """A booted VM waiting for its one job; the VM's ``-m`` is the job's memory."""

    def __init__(self, warm: WarmVm) -> None:
        self._warm = warm

    @property
    def pid(self) -> int:
        return self._warm.vm.pid

    def run(self, job: Job) -> Outcome:
        """Run the one job (its shape must be the VM's) and kill the VM."""
        if (job.memory_mb, job.cpus) != (self._warm.memory_mb, self._warm.cpus):
            self.close()
            raise ValueError(f"the job wants {job.memory_mb} MB x {job.cpus} CPUs; this VM was "
                             f"prepared with {self._warm.memory_mb} MB x {self._warm.cpus}")
        return outcome_of(run_warm(self._warm, request_of(job)))

    def close(self) -> None:
        self._warm.vm.close()


def prepare(spec: Prepare, *, cache: Path | None = None) -> PreparedVm:
    """Boot a VM of the spec's shape on the cached image and wait until it is READY (raises
    AgentgwError, with the VM killed, if it does not get there within the boot budget)."""
    accel = check_accel(spec.backend)
    built = image.load(cache if cache is not None else Path("/") / image.DEFAULT_CACHE)
    machine = Machine(accel, backend.pick_machine(), tsc_khz=host_tsc_khz())
    warm = start_warm(machine, built, memory_mb=spec.memory_mb, cpus=spec.cpus)
    warm.wait_ready()
    return PreparedVm(warm)
