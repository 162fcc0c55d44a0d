"""The broker's side of job units: one agentgw-job@ unit per job (see :mod:`.jobunit`).

The broker's unit is hardened so that it cannot start runsc (no user namespaces, no mounts, no
ptrace), and it should not: every job would then run as the broker's user, beside every other
job and the sockets. So systemd starts each job. ``agentgw-job.socket`` listens on
``/run/agentgw/sandbox-job.sock`` (0660 root:agentgw-sandbox: only the broker connects) with
``Accept=yes``: every connection is one instance of agentgw-job@.service, a DynamicUser of its
own (``User=agj%i``: the instance name holds the connection's number, so no two jobs share a
uid), no network, and its own memory, task, CPU and run-time limits. A microVM job goes to
``agentgw-vmjob.socket`` (``sandbox-vmjob.sock``): the same unit with /dev/kvm and the kvm group
(``User=agv%i``), which a gVisor job's unit does not get.

A connection (:class:`Unit`) is *prepared* first: the prepare line names the backend and the
sandbox's shape, and the unit answers ``ready`` once its sandbox waits for a job. The broker
keeps some prepared ones (:mod:`.units`) and some *spare* ones (:class:`Spare`: connected, the
unit started, no prepare line yet); a cold job sends its prepare line to a spare, or on a new
connection, and its job line once the unit is ready (and limited). The broker has authorised
and validated the request; it sends it whole (every field, so the job unit needs no defaults of
its own) and reads the answer as it reads its own.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

from agentgw.errors import AgentgwError, die
from agentgw.sandbox import gvisor
from agentgw.sandbox.job import JobRequest, JobResult, MemoryLimit
from agentgw.sandbox.jobspec import Prepare, parse_ready, ready_unit, render_prepare
from agentgw.sandbox.protocol import BrokerError, parse_response

# gVisor jobs' units, and microVM jobs' (the same unit with /dev/kvm: agentgw-vmjob@.service)
SOCKETS = {"gvisor": ("run/agentgw/sandbox-job.sock", "agentgw-job.socket"),
           "vm": ("run/agentgw/sandbox-vmjob.sock", "agentgw-vmjob.socket")}
SLACK_S = 30.0  # beyond the job's timeout: the unit's start, runsc's start and teardown
READY_WAIT_S = 60.0

# Sets a ready unit's memory limit for a job of memory_mb (:class:`.jobmem.Limiter`): the unit's
# name, memory_mb -> what the kernel holds.
Limit = Callable[[str, int], MemoryLimit]


def _kind(backend: str) -> str:
    return "gvisor" if backend == "gvisor" else "vm"


def socket_path(root: Path = Path("/"), backend: str = "gvisor") -> Path:
    """The job socket ``backend``'s jobs go to (kvm and tcg: the microVM units')."""
    return root / SOCKETS[_kind(backend)][0]


def socket_unit(backend: str = "gvisor") -> str:
    return SOCKETS[_kind(backend)][1]


def unavailable(path: Path, *, backend: str = "gvisor") -> str:
    """'' when the job socket is there to connect to; otherwise why ``backend`` cannot be used."""
    if backend == "gvisor" and gvisor.runsc_path() is None:
        return "runsc (gVisor) is not installed"
    if not path.is_socket():
        unit = socket_unit(backend)
        return f"{unit} is not listening ({path} is missing; systemctl enable --now {unit})"
    return ""


def shape_of(request: JobRequest, backend: str) -> Prepare:
    return Prepare(backend, memory_mb=request.memory_mb, cpus=request.cpus, nproc=request.nproc)


def job_line(request: JobRequest) -> bytes:
    return request.model_dump_json().encode() + b"\n"


class Unit:
    """One connection to a job unit: prepared (``ready``), then one job, then closed."""

    def __init__(self, path: Path, spec: Prepare | None, *, limit: Limit | None = None) -> None:
        """Connect and send the prepare line; no ``spec``: only connect (:meth:`prepare`
        later: a cold job's unit, spare or new)."""
        self.spec, self.prepare_s = spec, 0.0
        self.limit = limit  # called by wait_ready once the unit is ready
        self.memory: MemoryLimit | None = None  # what ``limit`` set, once ready
        self._buf = b""
        self.heard = False  # whether the unit has said anything
        self._sent = False  # a cold job's line may go with the prepare line
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.settimeout(READY_WAIT_S)
            self.sock.connect(os.fspath(path))
            if spec is not None:
                self.sock.sendall(render_prepare(spec))
        except OSError as exc:
            self.sock.close()
            raise die(f"cannot reach the job socket {path}: {exc.strerror or exc}",
                      hint="systemctl enable --now agentgw-job.socket agentgw-vmjob.socket"
                      ) from None

    def prepare(self, spec: Prepare, job: bytes = b"") -> None:
        """The prepare line of a unit connected without one, and ``job`` right after it (a
        cold job without a ``limit`` to set once the unit is ready)."""
        self.spec, self._sent = spec, bool(job)
        try:
            self.sock.sendall(render_prepare(spec) + job)
        except OSError as exc:
            raise BrokerError("unavailable", "the job unit went away before its job: "
                              f"{exc.strerror or exc}") from None

    def _line(self, wait_s: float) -> bytes:
        deadline = time.monotonic() + wait_s
        while b"\n" not in self._buf:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError as exc:
                raise die(f"the job unit did not answer: {exc.strerror or exc}",
                          hint="see: journalctl -u 'agentgw-job@*'") from None
            if not chunk:
                raise die("the job unit closed the connection without an answer",
                          hint="see: journalctl -u 'agentgw-job@*'")
            self._buf += chunk
            self.heard = True
        line, self._buf = self._buf.split(b"\n", 1)
        return line + b"\n"

    def wait_ready(self, wait_s: float = READY_WAIT_S) -> Unit:
        """Block until the unit's sandbox waits for a job (a failure line raises as it reads),
        then set its memory limit, if this unit has one to set."""
        line = self._line(wait_s)
        try:
            self.prepare_s = parse_ready(line)
        except ValueError as exc:
            parse_response(line)  # a failure line: raises BrokerError with its kind and hint
            raise die(f"the job unit could not prepare: {exc}") from None
        if self.limit is not None and self.spec is not None:
            self.memory = self.limit(ready_unit(line), self.spec.memory_mb)
        return self

    def alive(self) -> bool:
        """Still waiting for a job: nothing to read (a unit that gave up closed the socket)."""
        try:
            return not select.select([self.sock], [], [], 0)[0]
        except (OSError, ValueError):
            return False

    def run(self, request: JobRequest) -> JobResult:
        """Send the job (unless it went with the prepare line), read its answer, close the
        connection."""
        try:
            try:
                if not self._sent:
                    self._sent = True
                    self.sock.sendall(job_line(request))
            except OSError as exc:  # the job line is not whole there: the job did not start
                raise BrokerError("unavailable", "the job unit went away before its job: "
                                  f"{exc.strerror or exc}") from None
            result, _ = parse_response(self._line(request.timeout_s + SLACK_S))
            return result if self.memory is None else result.model_copy(
                update={"memory": self.memory})
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()


def open_unit(path: Path, spec: Prepare, *, limit: Limit | None = None) -> Unit:
    """A prepared unit (blocking: the unit's start and its sandbox's, ~0.3-0.6 s), limited."""
    unit = Unit(path, spec, limit=limit)
    try:
        return unit.wait_ready()
    except BaseException:
        unit.close()
        raise


def _cold(unit: Unit, request: JobRequest, backend: str) -> JobResult:
    """``request`` on a unit connected without a prepare line: its prepare line (with the job
    line right after it, unless the unit has a limit to set once ready, which the job line
    then waits for), ready, the job, the answer; the connection is closed however it went."""
    try:
        unit.prepare(shape_of(request, backend),
                     job_line(request) if unit.limit is None else b"")
        unit.wait_ready(READY_WAIT_S + request.timeout_s)
        return unit.run(request)
    finally:
        unit.close()


def run_cold(
    path: Path, request: JobRequest, backend: str = "gvisor", *, limit: Limit | None = None
) -> JobResult:
    """One job in a fresh unit (a new connection), as :func:`_cold`."""
    return _cold(Unit(path, None, limit=limit), request, backend)


class Spare:
    """A connection to a job unit that has started and waits for its prepare line: any one job
    runs in it, its sandbox started for it (as :func:`run_cold`, without the unit's start)."""

    prepare_s = 0.0  # nothing prepared ahead

    def __init__(self, path: Path, backend: str = "gvisor", *, limit: Limit | None = None) -> None:
        self.backend = backend
        self.unit = Unit(path, None, limit=limit)

    def alive(self) -> bool:
        return self.unit.alive()

    def run(self, request: JobRequest) -> JobResult:
        """Prepare for ``request``, run it, answer. A unit that ended before it read its prepare
        line (nothing came back) is BrokerError 'unavailable': the caller runs the job cold."""
        try:
            return _cold(self.unit, request, self.backend)
        except AgentgwError as exc:
            if self.unit.heard or isinstance(exc, BrokerError):
                raise
            raise BrokerError("unavailable", f"the spare job unit ended unprepared: "
                              f"{exc.message}") from None

    def close(self) -> None:
        self.unit.close()


def runner(
    path: Path, backend: str = "gvisor", *, limit: Limit | None = None
) -> Callable[[JobRequest], JobResult]:
    """Run a job in a fresh agentgw-job@ unit (blocking; the broker calls it on a worker)."""

    def run(request: JobRequest) -> JobResult:
        return run_cold(path, request, backend, limit=limit)

    return run
