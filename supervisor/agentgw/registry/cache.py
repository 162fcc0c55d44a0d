"""A short time-to-live cache, so request load never turns into D-Bus or disk load.

A fresh value (younger than ``ttl``) is returned without leaving the event loop. A value that
has just expired (younger than ``max_stale``) is still returned, and one background thread
reloads it: requests never queue behind a reload (D-Bus, /proc and file reads block for tens
of milliseconds with 100 profiles), which would otherwise be every request's tail latency once
per ``ttl``. Without a value, or with one older than ``max_stale`` (a reload keeps failing or
nobody asked for a while), the request waits for a reload in a worker thread, and its error,
if any, reaches the caller. Concurrent reloads are serialised by a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio.to_thread
import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class _Held(Generic[T]):
    at: float
    value: T


class TTLCache(Generic[T]):
    def __init__(
        self,
        load: Callable[[], T],
        ttl: float,
        *,
        max_stale: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._max_stale = max_stale if max_stale is not None else 5 * ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._held: _Held[T] | None = None
        self._reloading = threading.Event()
        self.loads = 0

    def _age(self, held: _Held[T]) -> float:
        return self._clock() - held.at

    def _reload(self, *, unless_younger_than: float) -> T:
        with self._lock:
            held = self._held
            if held is not None and self._age(held) < unless_younger_than:
                return held.value
            value = self._load()
            self.loads += 1
            self._held = _Held(self._clock(), value)
            return value

    def _background(self) -> None:
        try:
            self._reload(unless_younger_than=self._ttl)
        except Exception as exc:  # noqa: BLE001 - kept stale; a later request surfaces it
            log.warning("registry_reload_failed", error=str(exc))
        finally:
            self._reloading.clear()

    def _kick(self) -> None:
        if self._reloading.is_set():
            return
        self._reloading.set()
        threading.Thread(target=self._background, name="registry-reload", daemon=True).start()

    async def get(self) -> T:
        held = self._held
        if held is not None:
            age = self._age(held)
            if age < self._ttl:
                return held.value
            if age < self._max_stale:
                self._kick()
                return held.value
        return await anyio.to_thread.run_sync(
            lambda: self._reload(unless_younger_than=self._ttl)
        )

    def peek(self) -> tuple[T, float] | None:
        """The value held and its age in seconds, without loading anything."""
        held = self._held
        return None if held is None else (held.value, self._age(held))

    async def reload(self) -> T:
        """Load a new value now (in a worker thread), whatever the age of the one held."""
        return await anyio.to_thread.run_sync(lambda: self._reload(unless_younger_than=0.0))

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until no background reload runs (tests and benchmarks use it)."""
        deadline = time.monotonic() + timeout
        while self._reloading.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
