"""``agentgw sandbox serve``: sockets, privileges and backend, then the broker's loop.

Under systemd the broker makes no socket: ``agentgw-sandbox.socket`` passes it its control
socket (``$LISTEN_FDS``), and each profile's socket belongs to ``agentgw-sandbox-relay@<p>``,
whose relay hands every caller's connection to the broker over that control socket
(:mod:`agentgw.sandbox.relay`, :mod:`agentgw.sandbox.control`). So agentgw-sandbox.service
needs no capability at all, and a profile ``agentgw apply`` adds later is served without a
restart. Run by hand (no ``$LISTEN_FDS``: tests, development) it makes one socket per applied
profile itself, which takes root for the chown.

Then every capability is dropped (``capset`` to empty sets, which empties the ambient set too)
while the process still has a single thread -- capabilities are per thread. Only after that is
any QEMU started (the KVM probe of a detection no cached record answers), so no probe VM ever
holds a capability. Jobs never run here: each one, gVisor or microVM, is an agentgw-job@ unit of
its own (:mod:`agentgw.sandbox.jobclient`), so a guest that escapes QEMU or the Sentry holds a
dynamic user of its own, not the broker's (MICROVM_NOTES.md).

Readiness and stopping are reported to systemd (``Type=notify``) by sd_notify(3), libsystemd's
own through pystemd (:mod:`agentgw.bus.daemon`).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import functools
import grp
import os
import pwd
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from agentgw.bus.daemon import listen_sockets, notify
from agentgw.config.load import Config
from agentgw.errors import die
from agentgw.log import get_logger
from agentgw.paths import Layout
from agentgw.sandbox import backend, image, jobclient, jobmem
from agentgw.sandbox.broker import QUEUE_WAIT_S, Broker, Callers, Capacity, ExecLog, Runner
from agentgw.sandbox.control import serve_control
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.jobspec import Prepare
from agentgw.sandbox.pool import PoolStats
from agentgw.sandbox.protocol import host_limits
from agentgw.sandbox.units import UnitPool
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
                    fail_hint="run as root, or as agentgw-sandbox.service (sockets by systemd)")
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
    built: image.Image, cache: Path, access: backend.Gvisor, *, allow_emulation: bool = False,
    run_kvm: Runner | None = None,
) -> backend.Detection:
    """The backend recorded in the image cache for this kernel + QEMU + host when there is one;
    otherwise probed now. gVisor runs through ``access``: runsc needs privileges (namespaces,
    ptrace, mounts) that agentgw-sandbox.service does not have, so each job is a unit of its
    own (:mod:`agentgw.sandbox.jobunit`); so does the KVM probe (``run_kvm``): the broker has
    no /dev/kvm. The cache is read-only to the broker, so the detection runs on a private
    copy of the cache's records."""
    with tempfile.TemporaryDirectory(prefix="agentgw-detect-") as tmp:
        for found in cache.glob("backend-*.json"):
            shutil.copy(found, tmp)
        return backend.detect(built, Path(tmp), allow_emulation=allow_emulation, access=access,
                              run_kvm=run_kvm)


def pick_backend(layout: Layout, built: image.Image, cache: Path, *, allow_emulation: bool
                 ) -> tuple[backend.Detection, backend.Gvisor]:
    """The broker's backend. A cached gVisor answer was proven by root's runsc; the broker
    proves its own way to it (a probe job through a job unit) before relying on it, and
    detects again without gVisor, with the reason, when that fails."""
    path, vm_path = jobclient.socket_path(layout.root), jobclient.socket_path(layout.root, "kvm")
    access = backend.Gvisor(run=jobclient.runner(path), unavailable=jobclient.unavailable(path))
    run_kvm = (jobclient.runner(vm_path, "kvm")
               if not jobclient.unavailable(vm_path, backend="kvm") else None)
    detection = detect_readonly(built, cache, access, allow_emulation=allow_emulation,
                                run_kvm=run_kvm)
    if detection.backend == "gvisor":
        why = backend.try_gvisor(access)
        if why:
            log.warning("sandbox_gvisor_unusable", reason=why)
            access = backend.Gvisor(unavailable=why)
            detection = detect_readonly(built, cache, access, allow_emulation=allow_emulation,
                                        run_kvm=run_kvm)
    return detection, access


def refuse(detection: backend.Detection) -> Runner:
    """A runner that runs nothing and says why (the detection found no usable backend)."""

    def run(request: JobRequest) -> JobResult:
        backend.refuse_unless_usable(detection)
        raise die(f"the sandbox backend {detection.backend} cannot run jobs")

    return run


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


@dataclass(frozen=True)
class Sockets:
    """What the broker serves: its own listeners (run by hand), or the control socket
    systemd passed (the relays')."""

    listeners: Mapping[str, socket.socket]
    control: socket.socket | None = None

    def describe(self) -> str:
        if self.control is not None:
            return "every profile's relay"
        return ", ".join(sorted(self.listeners))


async def _serve(broker: Broker, sockets: Sockets, status: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    control = (functools.partial(serve_control, sockets.control)
               if sockets.control is not None else None)
    await broker.serve(sockets.listeners, stop,
                       ready=lambda: notify(f"READY=1\nSTATUS={status}"), control=control)
    notify("STOPPING=1")


@dataclass(frozen=True)
class Serving:
    """How the broker runs jobs: ``runner``, described as ``how``; ``pool`` its stats."""

    runner: Runner
    how: str
    pool: Callable[[], PoolStats] | None = None


def _serve_with(
    config: Config, sockets: Sockets, records: ExecLog, queue_wait_s: float, serving: Serving,
) -> None:
    limits = config.host.sandbox
    capacity = Capacity(
        limits=host_limits(limits),
        per_profile=limits.max_concurrent_per_profile,
        per_host=limits.max_concurrent_host,
        queue_wait_s=queue_wait_s,
    )
    callers = Callers(user_of=config.host.user, uid_of=uid_of)
    broker = Broker(capacity, callers, runner=serving.runner, records=records, pool=serving.pool)
    status = f"serving {sockets.describe()} on {serving.how}"
    log.info("sandbox_broker_ready", status=status)
    asyncio.run(_serve(broker, sockets, status))


def _serve_units(
    layout: Layout, config: Config, sockets: Sockets, records: ExecLog, queue_wait_s: float,
    detection: backend.Detection,
) -> None:
    """Every job in a job unit on the detected backend; ``sandbox.pool_size`` of them prepared
    ahead, of the configured shape, and ``sandbox.spare_units`` started without a sandbox: a
    request that finds no prepared one of its shape starts its sandbox in a spare one, and one
    that finds neither in a new unit."""
    limits = config.host.sandbox
    backend_name = detection.backend
    spec = Prepare(backend_name, memory_mb=limits.memory_mb, cpus=limits.vcpus,
                   nproc=JobRequest.model_fields["nproc"].default)
    path = jobclient.socket_path(layout.root, backend_name)
    # A microVM's unit holds QEMU and its -m (the request's memory_mb): gVisor jobs only.
    limiter = jobmem.Limiter(layout.root)
    limit = limiter.apply if backend_name == "gvisor" else None
    with closing(limiter), UnitPool(
        None, limits.spare_units, cold=jobclient.runner(path, backend_name, limit=limit),
        make=functools.partial(jobclient.Spare, path, backend_name, limit=limit),
    ) as spares, UnitPool(
        spec, limits.pool_size, cold=spares.run,
        make=functools.partial(jobclient.open_unit, path, spec, limit=limit),
    ) as pool:
        _serve_with(config, sockets, records, queue_wait_s,
                    Serving(pool.run, f"{backend_name} ({detection.boundary}) in job units, pool "
                            f"{limits.pool_size}, spare {limits.spare_units}",
                            functools.partial(pool_stats, pool, spares)))


def pool_stats(pool: UnitPool, spares: UnitPool) -> PoolStats:
    """The prepared pool's stats with the spare units' beside them."""
    spare = spares.stats()
    return dataclasses.replace(pool.stats(), spares=spare.size, spares_ready=spare.ready,
                               served_spare=spare.served_warm)


def open_sockets(layout: Layout, config: Config) -> Sockets:
    """The control socket systemd passed, else (run by hand) a socket per applied profile."""
    passed = listen_sockets()
    if len(passed) > 1:
        raise die(f"systemd passed {len(passed)} sockets, expected the control socket only",
                  hint="agentgw-sandbox.socket has one ListenStream=")
    if passed:
        return Sockets(listeners={}, control=passed[0])
    return Sockets(listeners=open_listeners(layout, config))


def run_broker(
    layout: Layout, config: Config, *, cache: Path, records: ExecLog,
    queue_wait_s: float = QUEUE_WAIT_S,
) -> None:
    """Serve every profile until SIGTERM; sockets it made are removed on the way out."""
    limits = config.host.sandbox
    sockets = open_sockets(layout, config)
    listeners = sockets.listeners
    try:
        drop_capabilities()
        if os.geteuid() == 0:
            log.warning("sandbox_broker_as_root",
                        reason="a KVM probe runs as root; agentgw-sandbox.service is unprivileged")
        built = image.load(cache)
        detection, _ = pick_backend(layout, built, cache,
                                         allow_emulation=limits.allow_emulation)
        log.info("sandbox_backend", backend=detection.backend, reason=detection.reason)
        if detection.backend == "none":  # serve, so each caller is told why, and no job runs
            _serve_with(config, sockets, records, queue_wait_s,
                        Serving(refuse(detection), f"no backend ({detection.reason})"))
            return
        # Every job, gVisor or microVM, in an agentgw-job@ unit of its own (a DynamicUser per
        # job): the broker starts no QEMU and no runsc; sandbox.pool_size units are prepared
        # ahead (a VM booted, a runsc sandbox started), each for one job.
        _serve_units(layout, config, sockets, records, queue_wait_s, detection)
    finally:
        close_listeners(layout, listeners)
