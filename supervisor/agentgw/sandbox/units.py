"""The broker's pools of job units started ahead of their jobs: prepared ones and spare ones.

*Prepared* (a ``spec``): ``size`` connections to agentgw-job.socket whose units (:mod:`.jobclient`),
a dynamic user each, have built and started their sandbox of the pool's shape and wait for one
job. A request of that shape takes one (no start on the request path), the unit runs that one
job and tears down after answering; a background thread prepares a replacement.

*Spare* (no ``spec``): connections whose units have started -- systemd has set the unit up,
allocated its dynamic user and started its process -- and wait for their prepare line. Any
request may take one: its sandbox is started there for it, as cold, without the unit's start
(~0.1 s of a cold job's ~0.3 on this host).

A request that finds none (or, prepared, of another shape) goes to ``cold``: the spare pool
behind the prepared one, a new connection behind that. A held unit that went away before its
job (its run-time limit, a crash) is dropped; one that says its sandbox ended before the job
started (or, spare, ended before it was prepared) is retried cold.

Nothing here knows the backend: the prepare line carries it (``Prepare.backend``), so a QEMU
microVM in a job unit is the same pool. Stats as :class:`agentgw.sandbox.pool.PoolStats`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from agentgw.errors import AgentgwError, usage
from agentgw.log import get_logger
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.jobspec import Prepare
from agentgw.sandbox.pool import MAX_BACKOFF_S, REFILL_DEFER_S, PoolStats
from agentgw.sandbox.protocol import BrokerError

log = get_logger(__name__)

PRUNE_S = 30.0  # how often prepared units are checked for having gone away


class Held(Protocol):
    """A job unit held ahead of its job: prepared (:class:`agentgw.sandbox.jobclient.Unit`) or
    spare (:class:`agentgw.sandbox.jobclient.Spare`)."""

    prepare_s: float

    def alive(self) -> bool: ...

    def run(self, request: JobRequest) -> JobResult: ...

    def close(self) -> None: ...


def fits(spec: Prepare, request: JobRequest) -> bool:
    """Whether a request may take a unit prepared as ``spec``."""
    return (request.memory_mb, request.cpus, request.nproc) == (
        spec.memory_mb, spec.cpus, spec.nproc)


class UnitPool:
    """``size`` units held by ``make``: prepared ones of ``spec``'s shape, or spare ones (``spec``
    None, any request fits); ``run`` serves a fitting request on one, others go to ``cold``."""

    def __init__(
        self, spec: Prepare | None, size: int, *, make: Callable[[], Held],
        cold: Callable[[JobRequest], JobResult],
    ) -> None:
        if size < 0:
            raise usage(f"pool size must be 0 or more, not {size}")
        self.spec, self.size = spec, size
        self._make, self._cold = make, cold
        self._cond = threading.Condition()
        self._ready: list[Held] = []
        self._preparing = self._running = 0
        self._closed = threading.Event()
        self._served_warm = self._served_cold = self._failures = 0
        self._last: float | None = None
        self._thread = threading.Thread(target=self._refill, name="agentgw-units", daemon=True)

    def start(self) -> UnitPool:
        if self.size:
            self._thread.start()
        return self

    def _refill(self) -> None:
        backoff = 1.0
        while True:
            with self._cond:
                while not self._closed.is_set():
                    self._prune_locked()
                    if self._held() < self.size:
                        break
                    self._cond.wait(PRUNE_S)
                # A unit's start takes a core for ~0.3 s; starting it while a job runs on a
                # prepared one would slow that job down, so the refill waits for it (briefly).
                self._cond.wait_for(lambda: self._running == 0 or self._closed.is_set(),
                                    REFILL_DEFER_S)
                if self._closed.is_set():
                    return
                self._preparing += 1
            try:
                unit = self._make()
            except Exception as exc:  # noqa: BLE001 - the pool must outlive any one unit
                message = exc.message if isinstance(exc, AgentgwError) else repr(exc)
                with self._cond:
                    self._preparing -= 1
                    self._failures += 1
                    log.warning("pool_prepare_failed", error=message, retry_in_s=backoff)
                    self._cond.wait(backoff)  # close() wakes this early
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 1.0
            with self._cond:
                self._preparing -= 1
                if self._closed.is_set():
                    unit.close()
                    return
                self._last = round(unit.prepare_s, 3)
                self._ready.append(unit)
                self._cond.notify_all()

    def _held(self) -> int:
        return len(self._ready) + self._preparing

    def _prune_locked(self) -> None:
        """Drop prepared units that went away (their run-time limit, a crash)."""
        for unit in [u for u in self._ready if not u.alive()]:
            self._ready.remove(unit)
            unit.close()

    def _take(self, request: JobRequest) -> Held | None:
        with self._cond:
            while self._ready and (self.spec is None or fits(self.spec, request)):
                unit = self._ready.pop(0)
                self._cond.notify_all()  # the refill thread replaces it
                if unit.alive():
                    self._served_warm += 1
                    self._running += 1  # in the same breath as the take, so refill sees it
                    return unit
                unit.close()
            self._served_cold += 1
            return None

    def run(self, request: JobRequest) -> JobResult:
        """On a held unit if one is ready and fits, else cold. Warm: a prepared unit's."""
        unit = self._take(request)
        if unit is None:
            return self._cold(request)
        try:
            result = unit.run(request)
        except BrokerError as exc:
            if exc.kind != "unavailable":
                raise
            log.warning("pool_unit_lost", error=exc.message)  # the job never started
            with self._cond:
                self._served_warm -= 1
                self._served_cold += 1
            return self._cold(request)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
        return result if self.spec is None else result.model_copy(update={"warm": True})

    def wait_ready(self, count: int | None = None, timeout: float | None = None) -> bool:
        """Block until ``count`` (default: all ``size``) units are ready; False on timeout."""
        want = self.size if count is None else count
        with self._cond:
            done = self._cond.wait_for(lambda: len(self._ready) >= want or self._closed.is_set(),
                                       timeout)
            return done and not self._closed.is_set()

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(self.size, len(self._ready), self._preparing, self._served_warm,
                             self._served_cold, self._failures, self._last)

    def close(self) -> None:
        """Close every held unit (their sandboxes end) and stop the refill thread."""
        with self._cond:
            if self._closed.is_set():
                return
            self._closed.set()
            held, self._ready = self._ready, []
            self._cond.notify_all()
        for unit in held:
            unit.close()
        if self._thread.is_alive():  # one preparing: closed as soon as it is ready
            self._thread.join(timeout=5)

    def __enter__(self) -> UnitPool:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
