"""The warm pool: VMs booted ahead of time, each waiting on its channel for one job.

A request takes a READY VM (no boot on the request path), the VM runs that one job and is
destroyed; a background thread boots replacements. The pool holds at most ``size`` VMs (ready
or booting) and refuses a size whose guest memory would exceed its budget. A request the pool
cannot serve (no VM ready, or other memory/CPU limits than the pool's VMs) runs cold.

The broker does not use it now: its VMs would run as the broker's user, and every VM job is a
job unit of its own (:mod:`.vmunit`); a pool of prepared job units is the next step. The
benchmark uses it in-process.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypedDict, Unpack

from agentgw.errors import AgentgwError, usage
from agentgw.log import get_logger
from agentgw.sandbox.image import Image
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.vm import Machine, Vm, WarmVm, run_cold, run_warm, start_warm

log = get_logger(__name__)

MAX_BACKOFF_S = 30.0
REFILL_DEFER_S = 2.0


@dataclass(frozen=True)
class PoolStats:
    """A snapshot for status and the registry."""

    size: int
    ready: int
    booting: int
    served_warm: int
    served_cold: int
    boot_failures: int
    last_boot_s: float | None
    # Job units only (:mod:`.units`): spare units (started, no sandbox yet) kept, ready, and
    # the jobs that started their sandbox in one (of served_cold).
    spares: int = 0
    spares_ready: int = 0
    served_spare: int = 0


def check_budget(size: int, memory_mb: int, budget_mb: int) -> None:
    """Refuse a pool whose VMs' guest memory could exceed the budget."""
    if size < 0:
        raise usage(f"pool size must be 0 or more, not {size}")
    if size * memory_mb > budget_mb:
        raise usage(
            f"a pool of {size} VMs x {memory_mb} MB exceeds its budget of {budget_mb} MB",
            hint="lower the pool size or the VM memory, or raise the budget",
        )


class PoolSize(TypedDict, total=False):
    """How big a :class:`WarmPool` is: ``size`` VMs (default 1) of ``memory_mb`` (256) and
    ``cpus`` (1) each, within ``budget_mb`` of memory (default: exactly what they need)."""

    size: int
    memory_mb: int
    cpus: int
    budget_mb: int | None


class WarmPool:
    """``size`` single-use VMs kept booted; ``run`` serves a request warm when it can."""

    def __init__(
        self, image: Image, machine: Machine, *, workdir: Path | None = None,
        **sizes: Unpack[PoolSize],
    ) -> None:
        size, memory_mb = sizes.get("size", 1), sizes.get("memory_mb", 256)
        cpus, budget_mb = sizes.get("cpus", 1), sizes.get("budget_mb")
        budget = budget_mb if budget_mb is not None else size * memory_mb
        check_budget(size, memory_mb, budget)
        self.image, self.machine = image, machine
        self.size, self.memory_mb, self.cpus, self.budget_mb = size, memory_mb, cpus, budget
        self._workdir = workdir
        self._cond = threading.Condition()
        self._ready: list[WarmVm] = []
        self._booting: set[WarmVm] = set()
        self._closed = threading.Event()
        self._served_warm = self._served_cold = self._failures = self._running = 0
        self._last_boot: float | None = None
        self._reap_queue: queue.SimpleQueue[Vm | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._refill, name="agentgw-pool-refill", daemon=True),
            threading.Thread(target=self._reap, name="agentgw-pool-reap", daemon=True),
        ]

    def start(self) -> WarmPool:
        for t in self._threads:
            t.start()
        return self

    def _refill(self) -> None:
        backoff = 1.0
        while True:
            with self._cond:
                while not self._closed.is_set() and self._held() >= self.size:
                    self._cond.wait()
                # A boot takes a whole core under TCG; starting it while a warm job runs would
                # slow that job down, so the refill waits for it (briefly: load never stops it).
                self._cond.wait_for(lambda: self._running == 0 or self._closed.is_set(),
                                    REFILL_DEFER_S)
                if self._closed.is_set():
                    return
            try:
                warm = self._boot_one()
            except Exception as exc:  # noqa: BLE001 - the pool must outlive any one boot
                with self._cond:
                    if self._closed.is_set():  # close() killed the booting VM
                        return
                    self._failures += 1
                    message = exc.message if isinstance(exc, AgentgwError) else repr(exc)
                    log.warning("pool_boot_failed", error=message, retry_in_s=backoff)
                    self._cond.wait(backoff)  # close() wakes this early
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 1.0
            if warm is None:
                return
            log.debug("pool_vm_ready", pid=warm.vm.pid, boot_s=self._last_boot)

    def _boot_one(self) -> WarmVm | None:
        """Boot one VM into the ready list; None if the pool closed meanwhile. Only this thread
        adds VMs, so booting outside the lock cannot overshoot ``size``."""
        warm = start_warm(self.machine, self.image, memory_mb=self.memory_mb, cpus=self.cpus,
                          workdir=self._workdir)
        try:
            with self._cond:
                if self._closed.is_set():
                    warm.vm.close()
                    return None
                self._booting.add(warm)
            boot_s = warm.wait_ready()
            with self._cond:
                self._booting.discard(warm)
                if self._closed.is_set():
                    warm.vm.close()
                    return None
                self._last_boot = round(boot_s, 3)
                self._ready.append(warm)
                self._cond.notify_all()
            return warm
        except BaseException:
            with self._cond:
                self._booting.discard(warm)
            warm.vm.close()
            raise

    def _held(self) -> int:
        return len(self._ready) + len(self._booting)

    def _reap(self) -> None:
        while (vm := self._reap_queue.get()) is not None:
            vm.close()

    def _release(self, vm: Vm) -> None:
        """Reap a used VM off the request path; after close() there is no reaper, so inline."""
        with self._cond:
            if not self._closed.is_set():
                self._reap_queue.put(vm)
                return
        vm.close()

    def _take_locked(self) -> WarmVm | None:
        while self._ready:
            warm = self._ready.pop(0)
            self._cond.notify_all()  # the refill thread replaces it
            if warm.vm.alive():
                return warm
            self._reap_queue.put(warm.vm)  # under the lock, so never after close()
        return None

    def wait_ready(self, count: int | None = None, timeout: float | None = None) -> bool:
        """Block until ``count`` (default: all ``size``) VMs are ready; False on timeout."""
        want = self.size if count is None else count
        with self._cond:
            done = self._cond.wait_for(
                lambda: len(self._ready) >= want or self._closed.is_set(), timeout
            )
            return done and not self._closed.is_set()

    def fits(self, request: JobRequest) -> bool:
        return request.memory_mb == self.memory_mb and request.cpus == self.cpus

    def run(self, request: JobRequest) -> JobResult:
        """Run on a warm VM if one is ready and fits the request, else cold."""
        with self._cond:
            warm = self._take_locked() if self.fits(request) else None
            if warm is None:
                self._served_cold += 1
            else:
                self._served_warm += 1
                self._running += 1  # in the same breath as the take, so refill sees it
        if warm is not None:
            try:
                return run_warm(warm, request, reap=self._release)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()
        return run_cold(self.machine, self.image, request, workdir=self._workdir)

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(self.size, len(self._ready), len(self._booting), self._served_warm,
                             self._served_cold, self._failures, self._last_boot)

    def close(self) -> None:
        """Kill every VM the pool holds (ready or booting) and stop its threads."""
        with self._cond:
            if self._closed.is_set():
                return
            self._closed.set()
            held = [w.vm for w in self._ready] + [w.vm for w in self._booting]
            self._ready.clear()
            self._reap_queue.put(None)  # after every queued VM: the reaper closes them first
            self._cond.notify_all()
        for vm in held:
            vm.kill()  # a booting VM's wait_ready returns at EOF and the refill thread exits
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=30)
        while not self._reap_queue.empty():  # the reaper never ran if start() was not called
            if (queued := self._reap_queue.get_nowait()) is not None:
                queued.close()
        for vm in held:
            vm.close()

    def __enter__(self) -> WarmPool:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
