"""Which accelerator the sandbox uses, decided by booting a VM, and the self-test proof.

KVM counts as working only when a VM boots under it and runs a job within a few seconds: on
nested-virtualisation hosts /dev/kvm exists and accepts KVM_CREATE_VM, yet guests fail or hang.
So the probe is a real boot with a deadline, and the answer (KVM or TCG, and why) is cached per
guest kernel, QEMU version and host kernel. TCG is not a security boundary by QEMU's own policy;
callers must say so (``boundary`` below) and confine QEMU itself.

The self-test proof runs ``uname -r; cat /proc/cmdline`` in a VM: a guest kernel and command
line different from the host's show the job ran under another kernel, not in a container.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agentgw.errors import AgentgwError, die
from agentgw.fsio import write_atomic
from agentgw.log import get_logger
from agentgw.run import run
from agentgw.sandbox import gvisor
from agentgw.sandbox.image import Image
from agentgw.sandbox.job import Accel, Backend, JobRequest, JobResult
from agentgw.sandbox.vm import QEMU, Machine, host_tsc_khz, run_cold

log = get_logger(__name__)

KVM_PROBE_DEADLINE_S = 6.0
PROBE_ARGV = ("sh", "-c", "uname -r; cat /proc/cmdline")
Boundary = Literal["hardware-virtualisation", "user-space-kernel", "emulation-only", "none"]
Chosen = Literal["kvm", "gvisor", "tcg", "none"]


@dataclass(frozen=True)
class Gvisor:
    """How this process runs gVisor jobs: ``run`` (runsc here, or the broker's job units), or
    why it cannot (``unavailable``, '' when it can)."""

    run: Callable[[JobRequest], JobResult] = gvisor.run_job
    unavailable: str = ""


class Detection(BaseModel):
    """The accelerator chosen for this kernel + QEMU + host, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    backend: Chosen
    machine: str
    qemu_version: str
    kernel_version: str
    host_kernel: str
    reason: str
    detected_at: str

    @property
    def boundary(self) -> Boundary:
        return boundary_of(self.backend)


class SelfTest(BaseModel):
    """Proof that jobs run under a different kernel than the host's, and on what backend."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    backend: Backend
    boundary: Boundary
    reason: str = ""
    guest_kernel: str
    guest_cmdline: str
    host_kernel: str
    differs: bool
    time: str
    duration: float


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def host_kernel() -> str:
    return os.uname().release


def host_cmdline() -> str:
    try:
        return Path("/proc/cmdline").read_text().strip()
    except OSError:
        return ""


def qemu_version(qemu: str = QEMU) -> str:
    return run([qemu, "--version"]).stdout.splitlines()[0].strip()


def parse_machines(text: str) -> set[str]:
    """Machine names out of ``qemu-system-x86_64 -machine help``."""
    names = set()
    for line in text.splitlines()[1:]:
        word = line.split(maxsplit=1)
        if word:
            names.add(word[0])
    return names


def pick_machine(qemu: str = QEMU) -> str:
    """microvm when this QEMU has it; q35 otherwise (slower to boot, same guest)."""
    names = parse_machines(run([qemu, "-machine", "help"]).stdout)
    return "microvm" if "microvm" in names else "q35"


def detection_key(kernel_version: str, qemu: str, host: str) -> str:
    return hashlib.sha256(f"{kernel_version}\0{qemu}\0{host}".encode()).hexdigest()[:16]


def parse_probe(result: JobResult) -> tuple[str, str]:
    """(guest kernel, guest cmdline) from the probe job, or raise if it did not run cleanly."""
    lines = result.stdout.decode(errors="replace").splitlines()
    if result.exit_code != 0 or result.timed_out or len(lines) < 2:
        raise die(f"the self-test job failed (exit {result.exit_code}"
                  f"{', timed out' if result.timed_out else ''}): {result.detail}".rstrip(": "))
    return lines[0].strip(), lines[1].strip()


def boundary_of(accel: Chosen) -> Boundary:
    """What separates a job from the host: only KVM and gVisor are security boundaries."""
    return {"kvm": "hardware-virtualisation", "gvisor": "user-space-kernel",
            "tcg": "emulation-only", "none": "none"}[accel]  # type: ignore[return-value]


def is_boundary(accel: str) -> bool:
    return accel in ("kvm", "gvisor")


def probe(
    image: Image, machine: Machine | None, *, deadline_s: float | None = None, reason: str = ""
) -> SelfTest:
    """Run the probe job (in a VM on ``machine``, or under gVisor when it is None) and compare
    what it saw with the host. ``reason`` says why this backend is the one in use."""
    started = time.monotonic()
    request = JobRequest(argv=PROBE_ARGV, timeout_s=5.0, memory_mb=128)
    if machine is None:
        accel: Backend = "gvisor"
        result = gvisor.run_job(request)
    else:
        accel = machine.accel
        result = run_cold(machine, image, request, deadline_s=deadline_s)
    kernel, cmdline = parse_probe(result)
    host = host_kernel()
    return SelfTest(
        backend=accel,
        boundary=boundary_of(accel),
        reason=reason,
        guest_kernel=kernel,
        guest_cmdline=cmdline,
        host_kernel=host,
        differs=kernel != host and cmdline != host_cmdline(),
        time=_now(),
        duration=round(time.monotonic() - started, 3),
    )


def _kvm_failed(exc: AgentgwError) -> str:
    detail = exc.hint.splitlines()[-1] if exc.hint else ""
    return f"a KVM boot failed: {exc.message}" + (f" ({detail})" if detail else "")


def _try_kvm(image: Image, machine_type: str) -> str:
    """'' if KVM boots a VM here and runs the probe in time; otherwise why not."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is missing or not accessible"
    machine = Machine("kvm", machine_type, tsc_khz=host_tsc_khz())
    try:
        record = probe(image, machine, deadline_s=KVM_PROBE_DEADLINE_S)
    except AgentgwError as exc:
        return _kvm_failed(exc)
    if record.guest_kernel != image.kernel_version:
        return f"the KVM guest ran kernel {record.guest_kernel}, not {image.kernel_version}"
    return ""


def try_kvm_through(run_kvm: Callable[[JobRequest], JobResult], image: Image) -> str:
    """As :func:`_try_kvm`, with the probe VM booted by ``run_kvm`` (the broker's: a job unit,
    which has /dev/kvm where the broker has not)."""
    try:
        kernel, _ = parse_probe(run_kvm(JobRequest(argv=PROBE_ARGV, timeout_s=5.0,
                                                   memory_mb=128)))
    except AgentgwError as exc:
        return _kvm_failed(exc)
    except OSError as exc:
        return f"a KVM boot failed: {exc}"
    if kernel != image.kernel_version:
        return f"the KVM guest ran kernel {kernel}, not {image.kernel_version}"
    return ""


def try_gvisor(access: Gvisor) -> str:
    """'' if runsc runs the probe in a gVisor sandbox and reports gVisor's kernel; else why not."""
    if gvisor.runsc_path() is None:
        return "runsc (gVisor) is not installed"
    if access.unavailable:
        return access.unavailable
    try:
        kernel, _ = parse_probe(access.run(
            JobRequest(argv=PROBE_ARGV, timeout_s=10.0, memory_mb=128)))
    except AgentgwError as exc:
        return f"gVisor failed: {exc.message}"
    except OSError as exc:
        return f"gVisor failed: {exc}"
    if kernel == host_kernel():
        return f"the gVisor probe saw the host kernel {kernel}"
    return ""


def choose(why_not_kvm: str, why_not_gvisor: str, *, allow_emulation: bool) -> tuple[Chosen, str]:
    """Best first: KVM, gVisor, then TCG only when allowed (pure; the reasons say why)."""
    if not why_not_kvm:
        return "kvm", "KVM: a VM booted and ran the probe"
    if not why_not_gvisor:
        return "gvisor", f"gVisor ({gvisor.PLATFORM}): KVM skipped, {why_not_kvm}"
    skipped = f"KVM skipped, {why_not_kvm}; gVisor skipped, {why_not_gvisor}"
    if allow_emulation:
        return "tcg", f"TCG (sandbox.allow_emulation is true; not a security boundary): {skipped}"
    return "none", f"no sandbox backend: {skipped}; TCG is not a security boundary and " \
        "sandbox.allow_emulation is false"


def usable(detection: Detection, *, allow_emulation: bool, allow_gvisor: bool = True) -> bool:
    """Whether a cached detection still holds: its backend is allowed and still there."""
    if detection.backend == "gvisor" and (not allow_gvisor or gvisor.runsc_path() is None):
        return False
    if detection.backend == "tcg":
        # TCG was a fallback: it holds while emulation is allowed and gVisor cannot be had.
        return allow_emulation and (not allow_gvisor or gvisor.runsc_path() is None)
    if detection.backend == "none":
        return False
    return True


def detect(
    image: Image, cache: Path, *, redetect: bool = False, allow_emulation: bool = False,
    access: Gvisor = Gvisor(),  # noqa: B008 - frozen, shared on purpose
    run_kvm: Callable[[JobRequest], JobResult] | None = None,
) -> Detection:
    """The backend to use: cached if this kernel + QEMU + host were probed before and the
    choice still holds (KVM or gVisor); otherwise probed again, best first. KVM is probed
    through ``run_kvm`` when given (the broker's job units), else here; gVisor through
    ``access`` (the broker's: its job units); when that says it is unavailable, KVM, then TCG
    if allowed."""
    qemu = qemu_version()
    host = host_kernel()
    path = cache / f"backend-{detection_key(image.kernel_version, qemu, host)}.json"
    if not redetect and path.exists():
        try:
            cached = Detection.model_validate_json(path.read_text())
            if usable(cached, allow_emulation=allow_emulation,
                      allow_gvisor=not access.unavailable):
                return cached
        except (OSError, ValueError):
            log.warning("sandbox_detection_unreadable", path=str(path))
    machine_type = pick_machine()
    why_not = (_try_kvm(image, machine_type) if run_kvm is None
               else try_kvm_through(run_kvm, image))
    why_not_gvisor = try_gvisor(access) if why_not else ""
    chosen, reason = choose(why_not, why_not_gvisor, allow_emulation=allow_emulation)
    detection = Detection(
        backend=chosen,
        machine=machine_type,
        qemu_version=qemu,
        kernel_version=image.kernel_version,
        host_kernel=host,
        reason=reason,
        detected_at=_now(),
    )
    write_atomic(path, json.dumps(detection.model_dump(), indent=2, sort_keys=True) + "\n",
                 tmp=path.with_name(f".{path.name}.{os.getpid()}"))
    log.info("sandbox_backend_detected", backend=detection.backend, reason=detection.reason)
    return detection


def refuse_unless_usable(detection: Detection) -> None:
    if detection.backend == "none":
        raise die(f"the sandbox will not run jobs: {detection.reason}",
                  hint="install runsc (apt-get install runsc), or set sandbox.allow_emulation: "
                  "true to accept QEMU TCG, which is not a security boundary")


def machine_for(detection: Detection) -> Machine | None:
    """The QEMU machine for a VM backend; None for gVisor. Refuses when there is no backend."""
    refuse_unless_usable(detection)
    if detection.backend == "gvisor":
        return None
    accel: Accel = "kvm" if detection.backend == "kvm" else "tcg"
    return Machine(accel, detection.machine, tsc_khz=host_tsc_khz())


def run_once(detection: Detection, image: Image, request: JobRequest) -> JobResult:
    """One cold job on the detected backend (a fresh VM, or a fresh gVisor sandbox)."""
    machine = machine_for(detection)
    if machine is None:
        return gvisor.run_job(request)
    return run_cold(machine, image, request)
