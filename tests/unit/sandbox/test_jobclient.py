"""The broker's client of job units against a fake unit on a real socket: prepare, ready, one
job, one answer; a failure to prepare raises with its kind; a unit gone before its job is
'unavailable' (the pool runs the job cold) and is seen as not alive."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentgw.sandbox import jobclient
from agentgw.sandbox.job import JobRequest, MemoryLimit
from agentgw.sandbox.jobspec import (
    Job,
    Outcome,
    Prepare,
    parse_job,
    parse_prepare,
    render_failure,
    render_outcome,
    render_ready,
)
from agentgw.sandbox.protocol import BrokerError

Behaviour = Callable[[socket.socket, list[bytes]], None]


@pytest.fixture
def unit_socket(tmp_path: Path) -> Iterator[Callable[[Behaviour], tuple[Path, list[bytes]]]]:
    servers: list[socket.socket] = []

    def serve(behaviour: Behaviour) -> tuple[Path, list[bytes]]:
        path = tmp_path / f"job{len(servers)}.sock"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.listen(1)
        servers.append(server)
        seen: list[bytes] = []

        def run() -> None:
            conn, _ = server.accept()
            with conn:
                behaviour(conn, seen)

        threading.Thread(target=run, daemon=True).start()
        return path, seen

    yield serve
    for server in servers:
        server.close()


def _lines(conn: socket.socket) -> Iterator[bytes]:
    reader = conn.makefile("rb")
    while line := reader.readline():
        yield line


def _early(conn: socket.socket) -> bytes:
    """What the client sent within 0.3 s (b'' for nothing)."""
    conn.settimeout(0.3)
    try:
        early = conn.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        early = b""
    conn.settimeout(None)
    return early


def _ready_and_answer(conn: socket.socket, lines: Iterator[bytes], unit: str, code: int) -> None:
    """Ready (named ``unit``), then one job line read and answered with ``code``."""
    conn.sendall(render_ready("gvisor", 0.2, unit))
    job = parse_job(next(lines))
    outcome = Outcome(exit_code=code, stdout=b"", stderr=b"", stdout_truncated=False,
                      stderr_truncated=False, timed_out=False, duration_s=0.01)
    conn.sendall(render_outcome(outcome, job, backend="gvisor"))


def good_unit(conn: socket.socket, seen: list[bytes]) -> None:
    lines = _lines(conn)
    seen.append(next(lines))
    conn.sendall(render_ready("gvisor", 0.25))
    job_line = next(lines)
    seen.append(job_line)
    job = parse_job(job_line)
    outcome = Outcome(exit_code=3, stdout=b"hi", stderr=b"", stdout_truncated=False,
                      stderr_truncated=False, timed_out=False, duration_s=0.01)
    conn.sendall(render_outcome(outcome, job, backend="gvisor"))


def test_a_prepared_unit_runs_one_job_and_answers(unit_socket) -> None:  # type: ignore[no-untyped-def]
    path, seen = unit_socket(good_unit)
    request = JobRequest(argv=("echo", "hi"), memory_mb=128)
    unit = jobclient.open_unit(path, jobclient.shape_of(request, "gvisor"))
    assert unit.prepare_s == 0.25 and unit.alive()
    result = unit.run(request)
    assert (result.exit_code, result.stdout) == (3, b"hi")
    assert parse_prepare(seen[0]) == Prepare("gvisor", memory_mb=128)
    assert parse_job(seen[1]) == Job(argv=("echo", "hi"), memory_mb=128)


def test_a_cold_job_sends_prepare_and_job_at_once(unit_socket) -> None:  # type: ignore[no-untyped-def]
    path, seen = unit_socket(good_unit)
    assert jobclient.run_cold(path, JobRequest(argv=("true",))).exit_code == 3
    assert parse_prepare(seen[0]).backend == "gvisor"


def test_a_unit_that_cannot_prepare_raises_with_its_kind(unit_socket) -> None:  # type: ignore[no-untyped-def]
    def broken(conn: socket.socket, seen: list[bytes]) -> None:
        next(_lines(conn))
        conn.sendall(render_failure("unavailable", "the gVisor sandbox failed to start: x"))

    path, _ = unit_socket(broken)
    with pytest.raises(BrokerError, match="failed to start") as caught:
        jobclient.open_unit(path, Prepare("gvisor"))
    assert caught.value.kind == "unavailable"


def test_a_unit_gone_before_its_job_is_not_alive_and_unavailable(unit_socket) -> None:  # type: ignore[no-untyped-def]
    gone = threading.Event()

    def leaves(conn: socket.socket, seen: list[bytes]) -> None:
        next(_lines(conn))
        conn.sendall(render_ready("gvisor", 0.1))
        conn.shutdown(socket.SHUT_RDWR)
        gone.set()

    path, _ = unit_socket(leaves)
    unit = jobclient.open_unit(path, Prepare("gvisor"))
    assert gone.wait(5)
    assert not unit.alive()
    with pytest.raises(BrokerError) as caught:
        unit.run(JobRequest(argv=("true",), stdin=b"x" * (4 << 20)))
    assert caught.value.kind in ("unavailable", "failed")


def test_a_limit_is_set_by_the_units_name_before_its_job_is_sent(unit_socket) -> None:  # type: ignore[no-untyped-def]
    """With a limit, a cold job's line waits for ready and the limit (the unit has read nothing
    of it before); the limit gets the name the ready line gave and the request's memory_mb, and
    what it returned is in the result."""
    calls: list[tuple[str, int, int]] = []

    def named_unit(conn: socket.socket, seen: list[bytes]) -> None:
        lines = _lines(conn)
        seen.append(next(lines))
        seen.append(_early(conn))  # nothing may arrive before ready
        _ready_and_answer(conn, lines, "agentgw-job@4-10-0.service", 0)

    def limit(unit: str, memory_mb: int) -> MemoryLimit:
        calls.append((unit, memory_mb, len(seen)))
        return MemoryLimit(max_bytes=(memory_mb + 64) << 20, enforced=True)

    path, seen = unit_socket(named_unit)
    result = jobclient.run_cold(path, JobRequest(argv=("true",), memory_mb=128), limit=limit)
    assert seen[1] == b""
    assert calls == [("agentgw-job@4-10-0.service", 128, 2)]
    assert result.memory == MemoryLimit(max_bytes=192 << 20, enforced=True)


def test_without_a_limit_the_result_reports_none(unit_socket) -> None:  # type: ignore[no-untyped-def]
    path, _ = unit_socket(good_unit)
    assert jobclient.run_cold(path, JobRequest(argv=("true",))).memory is None


def test_a_spare_unit_gets_its_prepare_line_with_the_job_only_when_taken(unit_socket) -> None:  # type: ignore[no-untyped-def]
    """A spare connects and sends nothing; taken, it prepares the request's shape, the limit
    is set once ready, then the job runs."""
    calls: list[tuple[str, int]] = []
    waited = threading.Event()

    def spare_unit(conn: socket.socket, seen: list[bytes]) -> None:
        seen.append(_early(conn))
        waited.set()
        lines = _lines(conn)
        seen.append(next(lines))
        _ready_and_answer(conn, lines, "agentgw-job@7-1-0.service", 5)

    def limit(unit: str, memory_mb: int) -> MemoryLimit:
        calls.append((unit, memory_mb))
        return MemoryLimit(max_bytes=(memory_mb + 64) << 20, enforced=True)

    path, seen = unit_socket(spare_unit)
    spare = jobclient.Spare(path, "gvisor", limit=limit)
    assert spare.alive() and spare.prepare_s == 0.0
    assert waited.wait(5)
    result = spare.run(JobRequest(argv=("true",), memory_mb=96, cpus=2))
    assert seen[0] == b""  # nothing before it was taken
    assert parse_prepare(seen[1]) == Prepare("gvisor", memory_mb=96, cpus=2)
    assert calls == [("agentgw-job@7-1-0.service", 96)]
    assert (result.exit_code, result.memory) == (5, MemoryLimit(max_bytes=160 << 20,
                                                                enforced=True))


def test_a_spare_that_ended_unprepared_is_unavailable_one_that_failed_is_not(unit_socket) -> None:  # type: ignore[no-untyped-def]
    def ends(conn: socket.socket, seen: list[bytes]) -> None:
        conn.shutdown(socket.SHUT_RDWR)

    def fails(conn: socket.socket, seen: list[bytes]) -> None:
        next(_lines(conn))
        conn.sendall(render_failure("failed", "the job unit could not read the request: x"))

    path, _ = unit_socket(ends)
    spare = jobclient.Spare(path)
    with pytest.raises(BrokerError, match="ended unprepared|went away before") as caught:
        spare.run(JobRequest(argv=("true",)))  # the prepare line's send, or its answer, fails
    assert caught.value.kind == "unavailable"
    path, _ = unit_socket(fails)
    with pytest.raises(BrokerError, match="could not read") as caught:
        jobclient.Spare(path).run(JobRequest(argv=("true",)))
    assert caught.value.kind == "failed"
