"""The broker's control socket: connections a relay accepted and passed (SCM_RIGHTS) are
answered as if accepted on the profile's own socket; anything else a relay sends is dropped."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentgw.sandbox.broker import Broker, Callers, Capacity, ExecLog, Peer
from agentgw.sandbox.control import serve_control
from agentgw.sandbox.relay import hand_over, main
from tests.unit.sandbox.brokers import LIMITS, echo, request_line


@contextmanager
def broker_on_control(
    tmp_path: Path, user_uid: int, peer_uid: int | None = None
) -> Iterator[Path]:
    """A broker with no socket of its own, serving what comes over ``control.sock``; any
    profile's user is ``user_uid`` (profiles are looked up per connection)."""
    control_path = tmp_path / "control.sock"
    control = socket.socket(socket.AF_UNIX)
    control.bind(str(control_path))
    control.listen()
    log = ExecLog.open(tmp_path / "execs.jsonl")
    broker = Broker(Capacity(limits=LIMITS, per_profile=2, per_host=2, queue_wait_s=5),
                    Callers(user_of=lambda p: f"agent-{p}", uid_of=lambda _: user_uid,
                            **({"peer": lambda _: Peer(1, peer_uid, peer_uid)}
                               if peer_uid is not None else {})),
                    runner=echo, records=log)
    loop, stop, ready = asyncio.new_event_loop(), asyncio.Event(), threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(broker.serve(
            {}, stop, ready=ready.set, control=functools.partial(serve_control, control)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        yield control_path
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
        log.close()
        control.close()


def relayed(control: Path, profile: str, line: bytes) -> bytes:
    """A caller's connection, accepted by a relay and passed to the broker; the answer."""
    caller, accepted = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with caller, accepted:
        hand_over(accepted, profile, str(control))
        accepted.close()
        caller.settimeout(10)
        caller.sendall(line)
        caller.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := caller.recv(65536):
            data += chunk
    return data


def test_a_passed_connection_of_a_profile_unknown_at_start_is_served(tmp_path: Path) -> None:
    """Any profile (none configured when the broker started) is answered over control.sock,
    authorised by the caller's own credentials (root here)."""
    with broker_on_control(tmp_path, user_uid=12345) as control:
        answer = json.loads(relayed(control, "newprof", request_line({"argv": ["a", "b"]})))
    assert (answer["ok"], answer["exit_code"]) == (True, 2)
    (record,) = [json.loads(x) for x in (tmp_path / "execs.jsonl").read_text().splitlines()]
    assert (record["profile"], record["uid"]) == ("newprof", os.getuid())


def test_a_passed_caller_who_is_not_the_profiles_user_is_refused(tmp_path: Path) -> None:
    """Authorisation stays per caller: a passed connection whose peer (SO_PEERCRED, here
    replaced) is neither root nor the profile's user is forbidden."""
    with broker_on_control(tmp_path, user_uid=12345, peer_uid=4242) as control:
        answer = json.loads(relayed(control, "api", request_line({"argv": ["x"]})))
    assert (answer["ok"], answer["error"]) == (False, "forbidden")


@pytest.mark.parametrize("profile", ["../etc", "Api", ""])
def test_a_bad_profile_name_is_dropped(tmp_path: Path, profile: str) -> None:
    with broker_on_control(tmp_path, user_uid=0) as control:
        caller, accepted = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with caller, accepted:
            with socket.socket(socket.AF_UNIX) as ctl:
                ctl.connect(str(control))
                socket.send_fds(ctl, [profile.encode() + b"\n"], [accepted.fileno()])
            accepted.close()
            caller.settimeout(10)
            assert caller.recv(100) == b""  # closed unanswered
    assert not (tmp_path / "execs.jsonl").read_text()


def test_relay_refuses_bad_arguments_and_runs_only_under_systemd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["../x", "/run/c.sock"]) == 2
    assert main(["api"]) == 2
    monkeypatch.delenv("LISTEN_PID", raising=False)
    with pytest.raises(SystemExit, match="no socket from systemd"):
        main(["api", "/run/c.sock"])
