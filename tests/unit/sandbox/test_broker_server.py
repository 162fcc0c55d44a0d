"""The broker on real unix sockets (fake jobs): who is served, limits and queueing, records."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agentgw.errors import AgentgwError, die
from agentgw.sandbox.broker import Slots, authorize
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.protocol import MAX_REQUEST_BYTES, argv_digest
from agentgw.sandbox.serve import make_listener
from tests.unit.sandbox.brokers import Gate, exchange, request_line, served

USERS = {"agent-api": 1001, "agent-core": 1002}


@pytest.mark.parametrize(
    ("uid", "profile", "allowed"),
    [
        (0, "api", True),  # root
        (1001, "api", True),  # the profile's own user
        (1002, "api", False),  # a sibling profile's user
        (1001, "core", False),
        (65534, "api", False),  # anyone else
        (1003, "mcp", False),  # a profile whose user does not exist: root only
        (0, "mcp", True),
    ],
)
def test_only_root_and_the_profiles_own_user_are_authorised(
    uid: int, profile: str, allowed: bool
) -> None:
    """SO_PEERCRED uid -> allowed: root, or exactly the uid of the profile's user."""
    assert authorize(uid, profile, user_of=lambda p: f"agent-{p}",
                     uid_of=USERS.get) is allowed


def test_a_sibling_profiles_uid_is_refused_before_reading(tmp_path: Path) -> None:
    """A caller the kernel names as agent-core gets 'forbidden' on api's socket, nothing runs,
    nothing is recorded and it never counts toward api's open requests; the same caller is
    served on core's socket. The refusal is logged as an event naming the profile and uid."""
    runs: list[JobRequest] = []

    def runner(request: JobRequest) -> JobResult:
        runs.append(request)
        return JobResult(exit_code=0, backend="tcg")

    with capture_logs() as logs, served(tmp_path, runner, uids=USERS, peer_uid=1002) as srv:
        refused = exchange(srv.sockets["api"], request_line({"argv": ["true"]}))
        assert refused["ok"] is False and refused["error"] == "forbidden"
        assert "agent-api" in refused["hint"]
        assert runs == [] and srv.records_lines() == []
        assert srv.broker.open.get("api", 0) == 0
        assert exchange(srv.sockets["core"], request_line({"argv": ["true"]}))["ok"] is True
    refusals = [(e["log_level"], e["profile"], e["uid"]) for e in logs
                if e["event"] == "sandbox_refused"]
    assert refusals == [("warning", "api", 1002)]


def test_a_job_round_trips_and_is_recorded_by_digest(tmp_path: Path) -> None:
    """stdin and files reach the job; the answer carries its output and exit code, the limits
    it ran with; execs.jsonl gets one line with the argv's digest and not the argv."""
    with served(tmp_path) as srv:
        answer = exchange(srv.sockets["api"], request_line({
            "argv": ["sh", "-c", "secret-arg"],
            "stdin": base64.b64encode(b"in\x00put").decode(),
            "files": {"a/b.txt": base64.b64encode(b"B").decode()},
            "timeout_s": 999,
        }))
    assert answer["ok"] is True and answer["exit_code"] == 3
    assert base64.b64decode(answer["stdout"]) == b"in\x00put"
    assert base64.b64decode(answer["stderr"]) == b"a/b.txt=B\n"
    assert answer["limits"] == {"timeout_s": 10.0, "memory_mb": 256, "cpus": 1,
                                "max_output": 4096}
    (record,) = srv.records_lines()
    assert record["argv_sha256"] == argv_digest(["sh", "-c", "secret-arg"])
    assert (record["profile"], record["uid"], record["via"], record["exit_code"]) == (
        "api", os.getuid(), "broker", 3)
    assert "secret-arg" not in srv.records.read_text()


def test_a_failed_vm_is_answered_and_recorded(tmp_path: Path) -> None:
    """A runner error becomes a 'failed' answer with its hint, and an exec record with the
    error and no exit code."""

    def broken(request: JobRequest) -> JobResult:
        raise die("the VM exited without a result", hint="kernel panic")

    with served(tmp_path, broken) as srv:
        answer = exchange(srv.sockets["api"], request_line({"argv": ["true"]}))
    assert (answer["error"], answer["message"], answer["hint"]) == (
        "failed", "the VM exited without a result", "kernel panic")
    (record,) = srv.records_lines()
    assert (record["exit_code"], record["error"]) == (None, "the VM exited without a result")


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"{not json}\n", "bad_request"),
        (b"\n", "bad_request"),
        (b'{"argv": ["true"]', "timeout"),  # no newline and the connection stays open
    ],
)
def test_malformed_or_incomplete_requests_get_an_error_line(
    tmp_path: Path, payload: bytes, kind: str
) -> None:
    """Bad JSON, an empty line and a request never finished each get one error answer."""
    with served(tmp_path, read_timeout_s=0.3) as srv:
        assert exchange(srv.sockets["api"], payload)["error"] == kind


def test_an_oversized_request_is_refused(tmp_path: Path) -> None:
    """A line longer than MAX_REQUEST_BYTES is 'too_large', not buffered without end."""
    with served(tmp_path) as srv, socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(srv.sockets["api"]))
        sock.settimeout(15)
        try:
            sock.sendall(b"x" * (MAX_REQUEST_BYTES + 4096))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the broker answered and closed while we were still sending
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert b'"error":"too_large"' in data


def concurrently(paths: list[Path]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda p: exchange(p, request_line({"argv": [p.stem]})), paths))


def test_per_profile_and_host_limits_answer_busy_after_the_queue_wait(tmp_path: Path) -> None:
    """With 1 job per profile and 2 per host: api and core each run one job; a second api
    job and a mcp job (host full) wait the queue time and get 'busy'; never more than 2 run."""
    gate = Gate()
    with served(tmp_path, gate, profiles=("api", "core", "mcp"), per_profile=1, per_host=2,
                queue_wait_s=0.3) as srv:
        with ThreadPoolExecutor(2) as pool:
            first = [pool.submit(exchange, srv.sockets[p], request_line({"argv": [p]}))
                     for p in ("api", "core")]
            assert gate.wait_started(2)
            second_api = exchange(srv.sockets["api"], request_line({"argv": ["api2"]}))
            mcp = exchange(srv.sockets["mcp"], request_line({"argv": ["mcp"]}))
            gate.release.set()
            answers = [f.result() for f in first]
    assert [a["ok"] for a in answers] == [True, True]
    assert (second_api["error"], mcp["error"]) == ("busy", "busy")
    assert "concurrency limit" in mcp["hint"]
    assert gate.most == 2 and sorted(gate.started) == ["api", "core"]


def test_queued_requests_run_in_turn_within_the_wait(tmp_path: Path) -> None:
    """Three api requests with 1 slot per profile and a long queue wait all succeed, one at
    a time."""
    gate = Gate()
    gate.release.set()
    with served(tmp_path, gate, per_profile=1, per_host=2, queue_wait_s=10) as srv:
        answers = concurrently([srv.sockets["api"]] * 2)
    assert [a["ok"] for a in answers] == [True, True] and gate.most == 1


def test_a_profile_cannot_pile_up_connections(tmp_path: Path) -> None:
    """A profile holds at most twice its limit of connections (running + queued); the next
    is 'busy' at once, before its request is read."""
    gate = Gate()
    with served(tmp_path, gate, per_profile=1, per_host=2, queue_wait_s=10) as srv:
        api = srv.sockets["api"]
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(exchange, api, request_line({"argv": ["a"]}))
            assert gate.wait_started(1)
            queued = pool.submit(exchange, api, request_line({"argv": ["b"]}))
            while srv.broker.open.get("api", 0) < 2:
                threading.Event().wait(0.01)
            third = exchange(api, b"")  # refused before it sends anything
            gate.release.set()
            assert running.result()["ok"] and queued.result()["ok"]
    assert third["error"] == "busy" and "already has 2" in third["message"]


def test_slots_grant_in_order_and_free_on_close() -> None:
    """Slots: a waiter is granted on release, a full host says False after the wait, closing
    answers the queued None, and a timed-out waiter leaves no slot taken."""

    async def scenario() -> None:
        slots = Slots(per_profile=1, per_host=1)
        assert await slots.acquire("api", 0) is True
        assert await slots.acquire("core", 0.05) is False
        waiter = asyncio.ensure_future(slots.acquire("core", 5))
        await asyncio.sleep(0)
        slots.release("api")
        assert await waiter is True
        assert slots.running == {"api": 0, "core": 1}
        closing = asyncio.ensure_future(slots.acquire("api", 5))
        await asyncio.sleep(0)
        slots.close()
        assert await closing is None
        assert await slots.acquire("api", 5) is None

    asyncio.run(scenario())


def test_listener_is_0660_and_replaces_only_a_stale_socket(tmp_path: Path) -> None:
    """The socket file is mode 0660 (group from the caller); a stale socket file is replaced,
    a served one or a non-socket is an error."""
    path = tmp_path / "run" / "api.sock"
    first = make_listener(path, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    with pytest.raises(AgentgwError, match="another broker"):
        make_listener(path, None)
    first.close()  # the file stays: a stale socket
    make_listener(path, None).close()
    path.unlink()
    path.write_text("")
    with pytest.raises(AgentgwError, match="not a socket"):
        make_listener(path, None)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another group needs root")
def test_listener_belongs_to_root_and_the_profile_group(tmp_path: Path) -> None:
    """Owner root, group the given gid: only that group (and root) may connect()."""
    path = tmp_path / "api.sock"
    make_listener(path, 65534).close()
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 65534, 0o660)


def test_requests_are_parsed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """parse_request (JSON, base64, validation of up to 23 MiB) runs on the worker of the
    caller's slot, not on the loop's thread that accepts and answers every profile."""
    from agentgw.sandbox import broker as broker_module

    threads: list[str] = []
    real = broker_module.parse_request

    def spy(line: bytes, limits: Any) -> JobRequest:
        threads.append(threading.current_thread().name)
        return real(line, limits)

    monkeypatch.setattr(broker_module, "parse_request", spy)
    with served(tmp_path) as srv:
        answer = exchange(srv.sockets["api"], request_line({"argv": ["true"]}))
    assert answer["ok"] is True
    assert len(threads) == 1 and threads[0].startswith("agentgw-job")
