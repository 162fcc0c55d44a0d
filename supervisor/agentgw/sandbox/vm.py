"""One QEMU microVM per job: render its command line, run it, read its console, always kill it.

``run_cold`` boots a VM whose initramfs is the base image plus the job's cpio; ``start_warm`` +
``run_warm`` boot one that waits for its job on its channel (a job unit's VM, :mod:`.vmunit`,
and the warm pool's). Either way
the VM is destroyed after one job, on every path (``Vm`` is a context manager), and the host
enforces a wall-clock deadline on top of the guest's own timeout: a VM still running at the
deadline is killed and the result says so (exit 124, ``timed_out``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from agentgw.errors import die
from agentgw.log import get_logger
from agentgw.run import TimeoutExpired, popen_pipes
from agentgw.sandbox.image import Image
from agentgw.sandbox.job import (
    MAX_OUTPUT_BYTES,
    TIMED_OUT_EXIT,
    Accel,
    JobRequest,
    JobResult,
    new_nonce,
    output_limit,
    parse_output,
    render_job_cpio,
    render_nonce_cpio,
    render_result,
    render_warm_payload,
)

log = get_logger(__name__)

QEMU = "qemu-system-x86_64"
SECCOMP = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
BOOT_BUDGET_S: dict[Accel, float] = {"kvm": 5.0, "tcg": 20.0}
# Base64 over the emulated UART moves a few MB/s under TCG; this is ample, not tight.
TRANSFER_S_PER_MIB = 4.0
SETTLE_S = 3.0  # after the job: collect output, print frames


@dataclass(frozen=True)
class Machine:
    """How QEMU is started: accelerator, machine type, and the host's TSC rate for the guest."""

    accel: Accel
    machine: str = "microvm"
    qemu: str = QEMU
    tsc_khz: int | None = None

    @property
    def cpu(self) -> str:
        # rdrand spares the guest a ~1 s wait for entropy; KVM passes the host's CPU through.
        return "host" if self.accel == "kvm" else "qemu64,+rdrand"


def parse_tsc_khz(cpuinfo: str) -> int | None:
    """The host's clock in kHz from /proc/cpuinfo ("cpu MHz : 2445.406" -> 2445406)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                return int(float(value) * 1000)
            except ValueError:
                return None
    return None


def host_tsc_khz() -> int | None:
    try:
        return parse_tsc_khz(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None


def render_cmdline(tsc_khz: int | None) -> str:
    """The guest kernel's command line. ``tsc_early_khz`` avoids a PIT calibration that hangs
    about one boot in twenty under TCG; ``panic=-1`` + ``-no-reboot`` turn a guest crash into a
    QEMU exit; ``cryptomgr.notests`` skips ~0.3 s of self-tests."""
    parts = ["console=ttyS0", "quiet", "loglevel=1", "panic=-1", "reboot=t", "cryptomgr.notests"]
    if tsc_khz:
        parts.append(f"tsc_early_khz={tsc_khz}")
    return " ".join(parts)


def render_qemu_argv(
    machine: Machine, image: Image, initrd: Path, *, memory_mb: int, cpus: int
) -> list[str]:
    """QEMU with no network, no default devices and seccomp on. The job channel is a virtio
    console on QEMU's stdio; the kernel's serial console goes to QEMU's stderr (diagnostics)."""
    return [
        machine.qemu,
        "-M", machine.machine,
        "-accel", machine.accel,
        "-cpu", machine.cpu,
        "-smp", str(cpus),
        "-m", str(memory_mb),
        "-nodefaults", "-no-user-config",
        "-nic", "none",
        "-display", "none",
        "-serial", "file:/dev/stderr",
        "-chardev", "stdio,id=channel,signal=off",
        "-device", "virtio-serial-device",
        "-device", "virtconsole,chardev=channel",
        "-no-reboot",
        "-sandbox", SECCOMP,
        "-kernel", os.fspath(image.vmlinux),
        "-initrd", os.fspath(initrd),
        "-append", render_cmdline(machine.tsc_khz),
    ]


class Vm:
    """A running QEMU: a thread collects its console (up to ``limit`` bytes, else the VM is
    killed), another its stderr; ``close`` kills it, reaps it and removes its temp dir."""

    def __init__(self, argv: list[str], tmpdir: Path, *, limit: int) -> None:
        self._tmpdir = tmpdir
        self._limit = limit
        self._out = bytearray()
        self._err = bytearray()
        self._eof = False
        self.overflowed = False
        self._cond = threading.Condition()
        self._closing = threading.Lock()
        self._closed = False
        self.started = time.monotonic()
        self._proc = popen_pipes(argv)
        self._threads = [
            threading.Thread(target=self._read_console, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_console(self) -> None:
        assert self._proc.stdout is not None  # noqa: S101 - popen_pipes always gives a pipe
        fd = self._proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            with self._cond:
                if self.overflowed:
                    continue  # drain until QEMU is gone, keep nothing more
                self._out += chunk
                if len(self._out) > self._limit:
                    self.overflowed = True
                    self._proc.kill()
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None  # noqa: S101 - popen_pipes always gives a pipe
        fd = self._proc.stderr.fileno()
        while chunk := os.read(fd, 65536):
            self._err = (self._err + chunk)[-8192:]

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def transcript(self) -> bytes:
        with self._cond:
            return bytes(self._out)

    def stderr_tail(self) -> str:
        return bytes(self._err).decode(errors="replace").strip()

    def wait_for(self, needle: bytes, deadline: float) -> bool:
        """Block until ``needle`` is on the console (True), or EOF / the deadline (False)."""
        start = 0
        with self._cond:
            while True:
                if self._out.find(needle, start) >= 0:
                    return True
                start = max(0, len(self._out) - len(needle))
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def send(self, data: bytes) -> None:
        """Write to the guest's console from a thread: a guest that stops reading must not
        block the caller past its deadline (killing the VM ends the write)."""

        def write() -> None:
            assert self._proc.stdin is not None  # noqa: S101 - popen_pipes always gives a pipe
            try:
                self._proc.stdin.write(data)
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                return

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        self._threads.append(writer)

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()

    def close(self) -> None:
        """Kill, reap and clean up, once: later and concurrent calls (a job unit closes its VM
        from whichever thread sees the end first) wait for the first and return."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._close()

    def _close(self) -> None:
        self.kill()
        try:
            self._proc.wait(timeout=10)
        except TimeoutExpired:
            log.warning("vm_unreaped", pid=self._proc.pid)
        # QEMU is gone, so the readers are at EOF: join them before closing their fds, so no
        # thread ever reads a descriptor number that was closed and reused.
        for t in self._threads:
            t.join(timeout=5)
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    continue
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> Vm:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Shape(NamedTuple):
    """A VM's size: memory in MiB and virtual CPUs."""

    memory_mb: int
    cpus: int


class Window(NamedTuple):
    """When a job started and by when (both time.monotonic()) its result must be in."""

    started: float
    deadline: float


def boot(
    machine: Machine, image: Image, extra: bytes, shape: Shape, *, limit: int,
    workdir: Path | None = None,
) -> Vm:
    """Start QEMU on the base image with ``extra`` (a cpio) appended to its initramfs."""
    memory_mb, cpus = shape
    tmpdir = Path(tempfile.mkdtemp(prefix="agentgw-vm-", dir=workdir))
    try:
        initrd = tmpdir / "initrd.cpio"
        with initrd.open("wb") as f:
            with image.base_cpio.open("rb") as base:
                shutil.copyfileobj(base, f)
            f.write(extra)
        argv = render_qemu_argv(machine, image, initrd, memory_mb=memory_mb, cpus=cpus)
        try:
            return Vm(argv, tmpdir, limit=limit)
        except FileNotFoundError as exc:
            raise die(f"{machine.qemu} is not installed",
                      hint="apt-get install qemu-system-x86 (make setup does)") from exc
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise


def job_window(request: JobRequest) -> float:
    """How long a job may take once its VM is up: its timeout, moving its data, settling."""
    return (request.timeout_s + SETTLE_S
            + TRANSFER_S_PER_MIB * (2 * request.max_output + len(request.stdin)) / (1 << 20))


def _collect(
    vm: Vm, nonce: str, request: JobRequest, window: Window, *, machine: Machine, warm: bool
) -> JobResult:
    started, deadline = window
    finished = vm.wait_for(f"{nonce} DONE".encode(), deadline)
    duration = time.monotonic() - started
    parsed = parse_output(vm.transcript(), nonce, request.max_output)
    if vm.overflowed:
        raise die("the VM printed more than any job can; it was killed",
                  hint="the guest misbehaves: rebuild the image with 'agentgw sandbox build'")
    if finished and parsed.exit_code is not None:
        return render_result(parsed, backend=machine.accel, warm=warm, duration_s=duration)
    if parsed.failure:
        raise die(f"the sandbox init failed: {parsed.failure}",
                  hint="rebuild the image with 'agentgw sandbox build --force'")
    if time.monotonic() >= deadline:
        log.warning("vm_deadline", pid=vm.pid, timeout_s=request.timeout_s)
        return JobResult(
            exit_code=TIMED_OUT_EXIT, timed_out=True, backend=machine.accel, warm=warm,
            duration_s=round(duration, 4),
            detail="the VM did not finish by the host deadline and was killed",
        )
    raise die("the VM exited without a result",
              hint=vm.stderr_tail() or "the guest kernel may have crashed (rerun with --debug)")


def run_cold(
    machine: Machine, image: Image, request: JobRequest, *, workdir: Path | None = None,
    deadline_s: float | None = None,
) -> JobResult:
    """Boot a VM with the job in its initramfs, collect the result, destroy the VM.

    ``deadline_s`` replaces the default host deadline (boot budget + the job's window)."""
    nonce = new_nonce()
    started = time.monotonic()
    window = BOOT_BUDGET_S[machine.accel] + job_window(request)
    deadline = started + (deadline_s if deadline_s is not None else window)
    with boot(machine, image, render_job_cpio(request, nonce),
              Shape(request.memory_mb, request.cpus), limit=output_limit(request.max_output),
              workdir=workdir) as vm:
        log.debug("vm_cold_boot", pid=vm.pid, accel=machine.accel)
        return _collect(vm, nonce, request, Window(started, deadline), machine=machine,
                        warm=False)


@dataclass(eq=False)  # identity: each is one running VM
class WarmVm:
    """A VM booted without a job: it prints READY, then waits for one job on its channel."""

    vm: Vm
    nonce: str
    machine: Machine
    memory_mb: int
    cpus: int

    def wait_ready(self) -> float:
        """Block until READY; return the boot time. Raises (and kills the VM) if it fails."""
        deadline = self.vm.started + BOOT_BUDGET_S[self.machine.accel]
        if not self.vm.wait_for(f"{self.nonce} READY".encode(), deadline):
            tail = self.vm.stderr_tail()
            self.vm.close()
            raise die("a warm VM did not become ready",
                      hint=tail or "check 'agentgw sandbox selftest'")
        return time.monotonic() - self.vm.started


def start_warm(
    machine: Machine, image: Image, *, memory_mb: int, cpus: int, workdir: Path | None = None,
) -> WarmVm:
    """Start booting a VM that will wait for its job (``WarmVm.wait_ready`` waits for it)."""
    nonce = new_nonce()
    vm = boot(machine, image, render_nonce_cpio(nonce), Shape(memory_mb, cpus),
              limit=output_limit(MAX_OUTPUT_BYTES), workdir=workdir)
    return WarmVm(vm, nonce, machine, memory_mb, cpus)


def run_warm(
    warm: WarmVm, request: JobRequest, *, reap: Callable[[Vm], None] = Vm.close
) -> JobResult:
    """Send the job to a READY VM and collect the result. The VM is killed as soon as the result
    is in; ``reap`` then releases it (the pool does that off the request path)."""
    started = time.monotonic()
    vm = warm.vm
    try:
        if not vm.alive():
            raise die("the warm VM died before its job")
        vm.send(render_warm_payload(request))
        return _collect(vm, warm.nonce, request, Window(started, started + job_window(request)),
                        machine=warm.machine, warm=True)
    finally:
        vm.kill()
        reap(vm)
