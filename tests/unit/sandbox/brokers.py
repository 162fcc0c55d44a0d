"""A real broker on real unix sockets under a temp dir, with a fake job runner, in a thread."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

from agentgw.sandbox.broker import Broker, Callers, Capacity, ExecLog, Peer
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.protocol import Limits
from agentgw.sandbox.serve import make_listener

LIMITS = Limits(timeout_s=10.0, memory_mb=256, cpus=1, max_output=4096)


def echo(request: JobRequest) -> JobResult:
    """A job that prints its stdin and the names of its files, and exits with len(argv)."""
    names = "".join(f"{k}={v.decode()}\n" for k, v in sorted(request.files.items()))
    return JobResult(exit_code=len(request.argv), stdout=request.stdin,
                     stderr=names.encode(), backend="tcg", warm=True, duration_s=0.01)


@dataclass
class Gate:
    """A runner that blocks until released, counting the jobs running at once."""

    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: int = 0
    most: int = 0
    started: list[str] = field(default_factory=list)
    started_cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, request: JobRequest) -> JobResult:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        with self.started_cond:
            self.started.append(request.argv[0])
            self.started_cond.notify_all()
        try:
            self.release.wait(timeout=20)
            return echo(request)
        finally:
            with self.lock:
                self.running -= 1

    def wait_started(self, count: int, timeout: float = 10.0) -> bool:
        with self.started_cond:
            return self.started_cond.wait_for(lambda: len(self.started) >= count, timeout)


@dataclass
class Served:
    broker: Broker
    sockets: dict[str, Path]
    records: Path

    def records_lines(self) -> list[dict[str, Any]]:
        if not self.records.exists():
            return []
        return [json.loads(line) for line in self.records.read_text().splitlines()]


def request_line(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data).encode() + b"\n"


def exchange(path: Path, payload: bytes, *, timeout: float = 15.0) -> dict[str, Any]:
    """Send raw bytes, read the whole answer, return it parsed."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data[:200]
    answer = json.loads(data)
    assert isinstance(answer, dict)
    return answer


class Serving(TypedDict, total=False):
    """What :func:`served` serves and how (defaults in brackets): ``profiles`` [api, core];
    ``uids`` user name -> uid [agent-<p> -> this process's uid]; ``peer_uid`` replaces the
    kernel's answer for every caller (to test refusals without switching users); the broker's
    ``per_profile``/``per_host`` [2, 2], ``queue_wait_s``/``read_timeout_s`` [5, 5];
    ``socket_dir`` [tmp_path/run]."""

    profiles: tuple[str, ...]
    uids: Mapping[str, int] | None
    peer_uid: int | None
    per_profile: int
    per_host: int
    queue_wait_s: float
    read_timeout_s: float
    socket_dir: Path | None


@contextmanager
def served(
    tmp_path: Path, runner: Callable[[JobRequest], JobResult] = echo,
    **serving: Unpack[Serving],
) -> Iterator[Served]:
    """Serve the profiles on their sockets with ``runner`` as the backend (see
    :class:`Serving`)."""
    profiles, uids = serving.get("profiles", ("api", "core")), serving.get("uids")
    peer_uid, socket_dir = serving.get("peer_uid"), serving.get("socket_dir")
    per_profile, per_host = serving.get("per_profile", 2), serving.get("per_host", 2)
    queue_wait_s = serving.get("queue_wait_s", 5.0)
    read_timeout_s = serving.get("read_timeout_s", 5.0)
    table = dict(uids) if uids is not None else {f"agent-{p}": os.getuid() for p in profiles}
    records = tmp_path / "state" / "execs.jsonl"
    log = ExecLog.open(records)
    capacity = Capacity(limits=LIMITS, per_profile=per_profile, per_host=per_host,
                        queue_wait_s=queue_wait_s, read_timeout_s=read_timeout_s)
    callers = Callers(
        user_of=lambda p: f"agent-{p}", uid_of=table.get,
        **({"peer": lambda sock: Peer(pid=1, uid=peer_uid, gid=peer_uid)}
           if peer_uid is not None else {}),
    )
    broker = Broker(capacity, callers, runner=runner, records=log)
    directory = socket_dir or tmp_path / "run"
    paths = {p: directory / f"{p}.sock" for p in profiles}
    listeners = {p: make_listener(path, None) for p, path in paths.items()}
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(broker.serve(listeners, stop, ready=ready.set))

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "the broker did not start"
        yield Served(broker, paths, records)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
        log.close()
        for path in paths.values():
            path.unlink(missing_ok=True)
