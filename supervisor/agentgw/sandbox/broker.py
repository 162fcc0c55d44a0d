"""The sandbox broker: the one way a gateway gets code run, each caller named by the kernel.

Each profile has its own unix socket (``/run/agentgw/sandbox/<p>.sock``, mode 0660,
root:agent-<p>, made by systemd; its relay passes each connection to :meth:`Broker.take`).
A connection carries one request and gets one answer, in the JSON line format of
:mod:`agentgw.sandbox.protocol`. Every connection is authorised by its ``SO_PEERCRED`` uid before
a byte is read: root, or the uid the profile's gateway runs as (``HostConfig.user(p)``); anyone
else gets ``forbidden``. The socket's group keeps other users from connecting at all; the uid
check is what holds when the file mode is loosened or a process shares the group.

Jobs are limited per profile and per host (``sandbox.max_concurrent_per_profile`` and
``max_concurrent_host``). A caller over a limit waits in a FIFO for at most the queue wait, then
gets ``busy``; a profile can hold at most twice its limit of connections (running plus queued),
so it cannot pile up requests (and their memory) in the broker. A request is parsed (JSON,
base64, validation: up to seconds at the size cap) on the worker thread of the slot it was
granted, then run there (in a job unit: a prepared one, a spare one or a new one; see
:mod:`.units`): one profile's large requests cost its own slots, never another profile's turn, and
the event loop only reads, authorises, queues and answers.

Every job that ran, or failed to, is appended as one JSON line to ``execs.jsonl`` (see
``protocol.render_record``): time, profile, caller uid, the argv's sha256 -- never the argv --,
duration, exit code, backend, warm, timed_out, and the pool's stats after the job (``pool``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentgw import logroll
from agentgw.errors import AgentgwError
from agentgw.log import get_logger
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.protocol import (
    MAX_REQUEST_BYTES,
    BrokerError,
    Limits,
    parse_request,
    render_error,
    render_record,
    render_result,
)

if TYPE_CHECKING:
    from agentgw.sandbox.pool import PoolStats

log = get_logger(__name__)

READ_TIMEOUT_S = 30.0  # a caller that does not finish its request line in this time is cut off
QUEUE_WAIT_S = 10.0
LINGER_S = 2.0  # how long a caller may keep sending after its answer
_UCRED = struct.Struct("iII")  # struct ucred: pid_t, uid_t, gid_t

Runner = Callable[[JobRequest], JobResult]
UidOf = Callable[[str], int | None]


@dataclass(frozen=True)
class Peer:
    """The process at the other end, as the kernel recorded it at connect()."""

    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return Peer(pid, uid, gid)


def authorize(uid: int, profile: str, *, user_of: Callable[[str], str], uid_of: UidOf) -> bool:
    """Root, or the uid the profile's gateway runs as. The user is looked up per connection, so
    a user created after the broker started (agentgw apply) is recognised without a restart,
    and a profile whose user does not exist admits root only."""
    if uid == 0:
        return True
    wanted = uid_of(user_of(profile))
    return wanted is not None and uid == wanted


class ExecLog:
    """Append-only exec records on a file descriptor opened with O_APPEND.

    Under the unit the descriptor is the broker's stdout, opened by systemd as root
    (``StandardOutput=append:``): the broker's own user cannot reach /var/lib/agentgw (0700
    root), and this way it can add records but not read or rewrite any.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, path: Path) -> ExecLog:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return cls(fd)

    def append(self, line: bytes) -> None:
        # One write per record under the log's flock: a root-side rotation (agentgw rotate)
        # copies and truncates the file in between, never during, a record.
        try:
            logroll.append_fd(self.fd, line)
        except OSError as exc:
            log.error("sandbox_record_failed", error=exc.strerror)

    def close(self) -> None:
        os.close(self.fd)


class Slots:
    """Jobs running per profile and on the host, and callers waiting for a slot (FIFO).

    Single-threaded (the event loop's). After every release all waiters that fit are granted,
    so a waiter still queued cannot run now, and a newcomer that fits never jumps a queue.
    """

    def __init__(self, per_profile: int, per_host: int) -> None:
        self.per_profile, self.per_host = per_profile, per_host
        self.running: dict[str, int] = {}
        self._waiters: deque[tuple[str, asyncio.Future[bool | None]]] = deque()
        self.closed = False

    def _fits(self, profile: str) -> bool:
        return (self.running.get(profile, 0) < self.per_profile
                and sum(self.running.values()) < self.per_host)

    def _take(self, profile: str) -> None:
        self.running[profile] = self.running.get(profile, 0) + 1

    async def acquire(self, profile: str, wait_s: float) -> bool | None:
        """True: a slot is held (``release`` it); False: none within ``wait_s``; None: closing."""
        if self.closed:
            return None
        if self._fits(profile):
            self._take(profile)
            return True
        fut: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        entry = (profile, fut)
        self._waiters.append(entry)
        try:
            # asyncio.wait neither raises on timeout nor cancels fut, so a grant that races
            # the timeout is seen below instead of being lost.
            await asyncio.wait([fut], timeout=wait_s)
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.result():
                self.release(profile)
            self._discard(entry)
            raise
        if not fut.done():
            self._discard(entry)
            return False
        return fut.result()

    def _discard(self, entry: tuple[str, asyncio.Future[bool | None]]) -> None:
        if entry in self._waiters:
            self._waiters.remove(entry)
        if not entry[1].done():
            entry[1].cancel()

    def release(self, profile: str) -> None:
        self.running[profile] -= 1
        for entry in list(self._waiters):
            waiter, fut = entry
            if self._fits(waiter):
                self._waiters.remove(entry)
                self._take(waiter)
                fut.set_result(True)

    def close(self) -> None:
        """Refuse new callers and tell the queued ones the broker is stopping."""
        self.closed = True
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)


@dataclass(frozen=True)
class Capacity:
    """How much a broker runs: each job's limits, concurrent jobs per profile and on the host,
    how long a job may queue and how long a request may take to arrive."""

    limits: Limits
    per_profile: int
    per_host: int
    queue_wait_s: float = QUEUE_WAIT_S
    read_timeout_s: float = READ_TIMEOUT_S


@dataclass(frozen=True)
class Callers:
    """Who may use a profile's socket: the profile's user name, a user's uid, and the peer of
    a connection (SO_PEERCRED; tests replace it)."""

    user_of: Callable[[str], str]
    uid_of: UidOf
    peer: Callable[[socket.socket], Peer] = peer_of


class Broker:
    """Answers connections on per-profile sockets: authorise, read, queue, run, record."""

    def __init__(
        self, capacity: Capacity, callers: Callers, *, runner: Runner, records: ExecLog,
        pool: Callable[[], PoolStats] | None = None,
    ) -> None:
        self.limits = capacity.limits
        self.peer = callers.peer
        self.slots = Slots(capacity.per_profile, capacity.per_host)
        self.max_open = 2 * capacity.per_profile
        self.runner = runner
        self.records = records
        self.pool = pool  # its stats go into each exec record
        self.user_of, self.uid_of = callers.user_of, callers.uid_of
        self.queue_wait_s, self.read_timeout_s = capacity.queue_wait_s, capacity.read_timeout_s
        self.open: dict[str, int] = {}
        self._executor = ThreadPoolExecutor(capacity.per_host, thread_name_prefix="agentgw-job")
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(
        self, profile: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One connection: one answer line, then close."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        counted = False
        try:
            peer = self.peer(writer.get_extra_info("socket"))
            if authorize(peer.uid, profile, user_of=self.user_of, uid_of=self.uid_of):
                # Counted once authorised only: strangers cannot make the profile 'busy'.
                self.open[profile] = self.open.get(profile, 0) + 1
                counted = True
                answer = await self._answer(profile, peer, reader)
            else:
                answer = self._refuse(profile, peer)
            writer.write(answer)
            await writer.drain()
            await self._finish(reader, writer)
        except ConnectionError:
            log.warning("sandbox_caller_gone", profile=profile)
        finally:
            if counted:
                self.open[profile] -= 1
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
            if task is not None:
                self._tasks.discard(task)

    async def _finish(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-close, then drop what the caller still sends, briefly: closing a unix socket
        with unread input resets the caller's side, which could lose it the answer (a request
        refused before it was read, or cut off as too large)."""
        if writer.can_write_eof():
            writer.write_eof()
        try:
            async with asyncio.timeout(LINGER_S):
                while await reader.read(1 << 16):
                    pass
        except TimeoutError:
            return

    def _refuse(self, profile: str, peer: Peer) -> bytes:
        log.warning("sandbox_refused", profile=profile, uid=peer.uid, pid=peer.pid)
        return render_error(
            "forbidden", f"uid {peer.uid} may not use the sandbox of profile {profile}",
            hint=f"only {self.user_of(profile)} and root may connect to this socket",
        )

    async def _answer(self, profile: str, peer: Peer, reader: asyncio.StreamReader) -> bytes:
        """The answer to an authorised caller."""
        if self.slots.closed:
            return render_error("unavailable", "the sandbox broker is stopping",
                                hint="retry once agentgw-sandbox is running again")
        if self.open[profile] > self.max_open:
            return render_error(
                "busy", f"profile {profile} already has {self.max_open} sandbox requests open",
                hint="wait for running jobs to finish, or raise max_concurrent_per_profile",
            )
        try:
            line = await self._read_line(reader)
        except BrokerError as exc:
            return render_error(exc.kind, exc.message, exc.hint)
        granted = await self.slots.acquire(profile, self.queue_wait_s)
        if granted is None:
            return render_error("unavailable", "the sandbox broker is stopping")
        if not granted:
            return render_error(
                "busy", f"no sandbox slot for profile {profile} within {self.queue_wait_s:g}s",
                hint="the profile's or the host's concurrency limit is reached; retry later",
            )
        try:
            return await self._run(profile, peer, line)
        finally:
            self.slots.release(profile)

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes:
        try:
            line = await asyncio.wait_for(reader.readline(), self.read_timeout_s)
        except TimeoutError:
            raise BrokerError("timeout", f"no complete request within {self.read_timeout_s:g}s",
                              hint="send one JSON line ending in a newline") from None
        except ValueError:  # StreamReader's limit: the line is longer than MAX_REQUEST_BYTES
            raise BrokerError("too_large", f"the request is over {MAX_REQUEST_BYTES} bytes",
                              hint="stdin and files together are limited to 16 MiB") from None
        if not line.strip():
            raise BrokerError("bad_request", "empty request",
                              hint="send one JSON object on one line")
        return line

    def _parse_and_run(self, line: bytes) -> tuple[JobRequest, JobResult | AgentgwError]:
        """On the slot's worker: the request (BrokerError if it is bad), then its result or
        the error that stopped it."""
        request = parse_request(line, self.limits)
        try:
            return request, self.runner(request)
        except AgentgwError as exc:
            return request, exc

    async def _run(self, profile: str, peer: Peer, line: bytes) -> bytes:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            request, outcome = await loop.run_in_executor(
                self._executor, self._parse_and_run, line)
        except BrokerError as exc:
            return render_error(exc.kind, exc.message, exc.hint)
        except Exception:  # noqa: BLE001 - one caller's failure must not stop the broker
            log.exception("sandbox_job_crashed", profile=profile)
            return render_error("internal", "the sandbox broker failed to run the job",
                                hint="see: journalctl -u agentgw-sandbox")
        if isinstance(outcome, AgentgwError):
            self._record(profile, peer, request, error=outcome.message, started=started)
            return render_error("failed", outcome.message, outcome.hint)
        self._record(profile, peer, request, result=outcome, started=started)
        return render_result(outcome, request)

    def _record(
        self, profile: str, peer: Peer, request: JobRequest, *, started: float,
        result: JobResult | None = None, error: str = "",
    ) -> None:
        self.records.append(render_record(
            profile=profile, uid=peer.uid, argv=request.argv, via="broker", result=result,
            error=error, duration_s=time.monotonic() - started,
            pool=dataclasses.asdict(self.pool()) if self.pool is not None else None,
        ))

    def take(self, profile: str, sock: socket.socket) -> None:
        """Answer a connection accepted elsewhere (a relay passed it) as one on ``profile``'s
        socket: the same authorisation, queue and limits."""
        async def answer() -> None:
            try:
                reader, writer = await asyncio.open_unix_connection(
                    sock=sock, limit=MAX_REQUEST_BYTES)
            except OSError:
                sock.close()
                return
            await self.handle(profile, reader, writer)

        task = asyncio.create_task(answer())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(
        self, listeners: Mapping[str, socket.socket], stop: asyncio.Event,
        ready: Callable[[], object] = lambda: None,
        control: Callable[[Callable[[str, socket.socket], None]], Awaitable[None]] | None = None,
    ) -> None:
        """Serve on ``listeners`` (profile -> listening socket), and the connections
        ``control`` passes to :meth:`take`, until ``stop`` is set; then stop accepting, tell
        queued callers, and let running jobs finish and be answered."""
        servers = []
        for profile, sock in sorted(listeners.items()):
            servers.append(await asyncio.start_unix_server(
                functools.partial(self.handle, profile), sock=sock, limit=MAX_REQUEST_BYTES,
            ))
        relayed = asyncio.ensure_future(control(self.take)) if control is not None else None
        try:
            ready()
            await stop.wait()
        finally:
            if relayed is not None:
                relayed.cancel()
                await asyncio.gather(relayed, return_exceptions=True)
            for server in servers:
                server.close()
            self.slots.close()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._executor.shutdown(wait=True)
