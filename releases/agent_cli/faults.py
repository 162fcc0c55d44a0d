"""Deliberate misbehaviour for the blast-radius soak (benchmarks/soak.py), one function per fault.

A release built from ``releases/variants/<fault>/`` carries ``agent_cli/VARIANT`` = ``<fault>``.
It starts, listens, notifies READY=1 and answers /health exactly like the good build, so
``agentgw promote`` of it can succeed. Then the fault is armed: at its first healthy answer, or
``ARM_S`` after READY=1 when nobody asks (a restart by systemd), it misbehaves until systemd
stops or kills it (ignoreterm acts at READY=1: it only changes how the process stops).
Nothing here limits itself: containing the fault is the host's job (the unit's limits), and
that is what the soak measures.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent_cli.server import Request, Response, Router

ARM_S = 1.0
# After the healthy answer that armed it, so that answer reaches its client (the promote).
GRACE_S = 0.3
CHUNK = 1 << 20
FILL_FILE = "fill.bin"
RETRY_S = 0.01

Log = Callable[[str], None]


def crash_loop(home: Path, log: Log) -> None:
    """Exit 1 (systemd's Restart=on-failure brings it back, and it exits again)."""
    log("fault crashloop: exiting 1")
    os._exit(1)


def fork_bomb(home: Path, log: Log) -> None:
    """Fork sleeping children until fork fails (EAGAIN at the task limit), and keep trying."""
    forked = 0
    refused = False
    while True:
        try:
            pid = os.fork()
        except OSError as exc:
            if not refused:
                refused = True
                log(f"fault forkbomb: fork refused after {forked} children: {_name(exc)}")
            time.sleep(RETRY_S)
            continue
        if pid == 0:
            while True:
                time.sleep(3600)
        forked += 1


def memory_hog(home: Path, log: Log) -> None:
    """Allocate and touch memory until the kernel refuses (MemoryError) or kills the process;
    a refusal ends the process with exit 1, as an uncaught MemoryError ends a main loop."""
    held: list[bytes] = []
    try:
        while True:
            held.append(b"\xa5" * CHUNK)
    except MemoryError:
        count = len(held)
        held.clear()
        log(f"fault memhog: allocation refused at {count} MiB: MemoryError; exiting 1")
        os._exit(1)


def cpu_hog(home: Path, log: Log) -> None:
    """Keep every CPU busy: two threads per CPU hashing a buffer (hashlib releases the GIL)."""
    buffer = bytes(CHUNK)
    threads = 2 * (os.cpu_count() or 1)
    log(f"fault cpuhog: {threads} busy threads")

    def burn() -> None:
        while True:
            hashlib.sha256(buffer).digest()

    for _ in range(threads - 1):
        threading.Thread(target=burn, daemon=True).start()
    burn()


def log_flood(home: Path, log: Log) -> None:
    """Write log lines to stderr (the journal) as fast as the reader takes them."""
    line = b"agent_cli: fault logflood " + b"x" * 100 + b"\n"
    block = line * 512
    log("fault logflood: flooding stderr")
    while True:
        os.write(2, block)


def fill_home(home: Path, log: Log) -> None:
    """Grow one file in AGENT_HOME until a write is refused (EFBIG, ENOSPC or EDQUOT), keep it,
    and go on serving."""
    chunk = b"\0" * CHUNK
    written = 0
    fd = os.open(home / FILL_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        while True:
            written += os.write(fd, chunk)
    except OSError as exc:
        log(f"fault fillhome: write refused at {written} bytes: {_name(exc)}")
    finally:
        os.close(fd)


def ignore_sigterm(home: Path, log: Log) -> None:
    """Ignore SIGTERM, so a stop runs into the unit's stop timeout and SIGKILL.

    Called in the main thread (only it may set signal handlers), at READY=1.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log("fault ignoreterm: SIGTERM ignored")


FAULTS: dict[str, Callable[[Path, Log], None]] = {
    "crashloop": crash_loop,
    "forkbomb": fork_bomb,
    "memhog": memory_hog,
    "cpuhog": cpu_hog,
    "logflood": log_flood,
    "fillhome": fill_home,
}
# Faults that act at READY=1 in the main thread instead of in a thread once armed.
AT_READY: dict[str, Callable[[Path, Log], None]] = {"ignoreterm": ignore_sigterm}


def _name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


class Fault:
    """One armed fault of a gateway process: ``ready`` at READY=1, ``healthy`` at a 200."""

    def __init__(self, variant: str, home: Path, log: Log) -> None:
        self.variant = variant
        self.home = home
        self.log = log
        self._healthy = threading.Event()

    def ready(self) -> None:
        at_ready = AT_READY.get(self.variant)
        if at_ready is not None:
            at_ready(self.home, self.log)
            return
        threading.Thread(target=self._arm, name=f"fault-{self.variant}", daemon=True).start()

    def healthy(self) -> None:
        self._healthy.set()

    def _arm(self) -> None:
        if self._healthy.wait(ARM_S):
            time.sleep(GRACE_S)
        FAULTS[self.variant](self.home, self.log)


def want_fault(variant: str) -> bool:
    return variant in FAULTS or variant in AT_READY


class HealthWatch(Router):
    """The gateway's router, telling the fault about the first healthy answer on ``paths``."""

    def __init__(self, inner: Router, paths: set[str], fault: Fault) -> None:
        super().__init__()
        self.inner = inner
        self.paths = paths
        self.fault = fault

    def dispatch(self, request: Request) -> Response:
        response = self.inner.dispatch(request)
        if response.status == 200 and request.path in self.paths:
            self.fault.healthy()
        return response
