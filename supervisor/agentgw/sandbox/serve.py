"""``agentgw sandbox serve``: sockets, privileges, backend and warm pool, then the broker's loop.

The order is the point. The sockets are made first: giving each to root:agent-<p> needs
CAP_CHOWN, the one capability agentgw-sandbox.service grants. Then every capability is dropped
(``capset`` to empty sets, which empties the ambient set too) while the process still has a
single thread -- capabilities are per thread. Only after that is any QEMU started (the KVM
probe, the warm pool), so no VM process ever holds a capability: under TCG a guest that
escapes into QEMU gets an unprivileged user and nothing more (MICROVM_NOTES.md).

Readiness and stopping are reported to systemd (``Type=notify``) by sd_notify(3), libsystemd's
own through pystemd (:mod:`agentgw.bus.daemon`).
"""

from __future__ import annotations

import asyncio
import ctypes
import grp
import os
import pwd
import shutil
import signal
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

from agentgw.bus.daemon import notify
from agentgw.config.load import Config
from agentgw.errors import die
from agentgw.log import get_logger
from agentgw.paths import Layout
from agentgw.sandbox import backend, gvisor, image
from agentgw.sandbox.broker import QUEUE_WAIT_S, Broker, Callers, Capacity, ExecLog, Runner
from agentgw.sandbox.pool import WarmPool
from agentgw.sandbox.protocol import host_limits
from agentgw.unixsock import Server, listen

log = get_logger(__name__)

SOCKET_MODE = 0o660
SOCKET_DIR_MODE = 0o755
BACKLOG = 64
_CAP_VERSION_3 = 0x20080522


def uid_of(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def gid_of(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def make_listener(path: Path, gid: int | None) -> socket.socket:
    """A listening socket at ``path``, mode 0660, owned by root and group ``gid`` (unchanged
    when None: tests). A stale socket file is replaced; a served one is an error."""
    server = Server(who="another broker", unit="agentgw-sandbox", not_socket=die,
                    not_socket_hint="remove it",
                    fail_hint="run as root, or as agentgw-sandbox.service (it grants CAP_CHOWN)")
    return listen(path, server, mode=SOCKET_MODE, dir_mode=SOCKET_DIR_MODE, backlog=BACKLOG,
                  gid=gid)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Empty this thread's capability sets (the ambient set follows the permitted one). Call
    it before any other thread exists: each thread has its own sets."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise die(f"cannot drop capabilities: {os.strerror(err)}")


def records_on_stdout() -> ExecLog:
    """The exec records go to the descriptor systemd opened as stdout (append mode); stdout
    itself then points at stderr, so nothing else printed can land among the records."""
    fd = os.dup(1)
    os.set_inheritable(fd, False)
    os.dup2(2, 1)
    return ExecLog(fd)


def detect_readonly(
    built: image.Image, cache: Path, *, allow_emulation: bool = False
) -> backend.Detection:
    """The backend recorded in the image cache for this kernel + QEMU + host when there is one;
    otherwise probed now. Not gVisor: runsc needs privileges (namespaces, ptrace, mounts) that
    agentgw-sandbox.service does not have, so the broker runs KVM, else TCG when allowed.
    The cache is read-only to the broker, so the detection runs on a
    private copy of the cache's records."""
    with tempfile.TemporaryDirectory(prefix="agentgw-detect-") as tmp:
        for found in cache.glob("backend-*.json"):
            shutil.copy(found, tmp)
        return backend.detect(built, Path(tmp), allow_emulation=allow_emulation,
                              allow_gvisor=False)


def open_listeners(layout: Layout, config: Config) -> dict[str, socket.socket]:
    """One socket per configured profile whose group exists; a profile not applied yet (no
    agent-<p> group) is skipped with a warning rather than taking the others down."""
    listeners: dict[str, socket.socket] = {}
    try:
        for profile in sorted(config.profiles):
            group = config.host.user(profile)
            gid = gid_of(group)
            if gid is None:
                log.warning("sandbox_profile_skipped", profile=profile,
                            reason=f"group {group} does not exist (run agentgw apply)")
                continue
            listeners[profile] = make_listener(layout.sandbox_socket(profile), gid)
    except BaseException:
        close_listeners(layout, listeners)
        raise
    if not listeners:
        raise die("no profile to serve: none is configured and applied",
                  hint="add gateways/<p>.yaml, run 'agentgw apply', then start the broker")
    return listeners


def close_listeners(layout: Layout, listeners: Mapping[str, socket.socket]) -> None:
    for profile, sock in listeners.items():
        sock.close()
        layout.sandbox_socket(profile).unlink(missing_ok=True)


async def _serve(broker: Broker, listeners: Mapping[str, socket.socket], status: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await broker.serve(listeners, stop, ready=lambda: notify(f"READY=1\nSTATUS={status}"))
    notify("STOPPING=1")


def _serve_with(
    config: Config, listeners: Mapping[str, socket.socket], records: ExecLog,
    queue_wait_s: float, runner: Runner, how: str,
) -> None:
    limits = config.host.sandbox
    capacity = Capacity(
        limits=host_limits(limits),
        per_profile=limits.max_concurrent_per_profile,
        per_host=limits.max_concurrent_host,
        queue_wait_s=queue_wait_s,
    )
    callers = Callers(user_of=config.host.user, uid_of=uid_of)
    broker = Broker(capacity, callers, runner=runner, records=records)
    status = f"serving {', '.join(sorted(listeners))} on {how}"
    log.info("sandbox_broker_ready", status=status)
    asyncio.run(_serve(broker, listeners, status))


def run_broker(
    layout: Layout, config: Config, *, cache: Path, records: ExecLog,
    queue_wait_s: float = QUEUE_WAIT_S,
) -> None:
    """Serve every configured profile until SIGTERM; sockets are removed on the way out."""
    limits = config.host.sandbox
    listeners = open_listeners(layout, config)
    try:
        drop_capabilities()
        if os.geteuid() == 0:
            log.warning("sandbox_broker_as_root",
                        reason="QEMU runs as root; agentgw-sandbox.service runs it unprivileged")
        built = image.load(cache)
        detection = detect_readonly(built, cache, allow_emulation=limits.allow_emulation)
        machine = backend.machine_for(detection)
        if machine is None:  # gVisor (not chosen by detect_readonly today): no warm pool
            _serve_with(config, listeners, records, queue_wait_s, gvisor.run_job,
                        f"{detection.backend} ({detection.boundary})")
            return
        with WarmPool(built, machine, size=limits.pool_size, memory_mb=limits.memory_mb,
                      cpus=limits.vcpus) as pool:
            _serve_with(config, listeners, records, queue_wait_s, pool.run,
                        f"{detection.backend} ({detection.boundary}), "
                        f"warm pool {limits.pool_size}")
    finally:
        close_listeners(layout, listeners)
