"""A registry app over a fabricated host, and clients that arrive as a given peer.

The peer is injected exactly as the server does it (``with_connection``), so the app under test
is the production app; only the kernel's answer to SO_PEERCRED is made up.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from agentgw.config.load import Config
from agentgw.model.status import ProfileStatus
from agentgw.observe.status import collect_status
from agentgw.paths import Layout
from agentgw.registry.app import Options, create_app
from agentgw.registry.auth import Connection, Peer, with_connection
from tests.unit.status.support import FakeSystemd, add_release, config, link, run_process, service

TOKEN = b"s3cret-token"
USERS = {0: "root", 1001: "agent-api", 1002: "agent-core", 1003: "agent-mcp", 1500: "alice",
         1600: "mallory"}
ADMIN_GID = 990
NOW = 1_700_000_100.0


class Client:
    """A synchronous HTTP client calling an ASGI app in-process (httpx's ASGI transport)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://registry") as c:
                return await c.request(method, path, **kwargs)

        return anyio.run(call)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("HEAD", path, **kwargs)


class FakeAccounts:
    def user_name(self, uid: int) -> str | None:
        return USERS.get(uid)

    def group_id(self, name: str) -> int | None:
        return ADMIN_GID if name == "agentgw" else None


@dataclass
class Clock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Host:
    layout: Layout
    config: Config
    clock: Clock
    app: Starlette
    provided: list[int] = field(default_factory=list)

    def client(self, uid: int | None = 0, *, groups: tuple[int, ...] = (),
               tcp: bool = False) -> Client:
        """A client whose connection the app sees as ``uid`` on the unix socket (or as TCP)."""
        if tcp:
            conn: Connection | None = Connection("tcp")
        elif uid is None:
            conn = None
        else:
            conn = Connection("unix", Peer(pid=4000, uid=uid, gid=uid, groups=groups))
        return Client(with_connection(self.app, conn))


def fabricate(tmp_path: Path) -> tuple[Layout, Config, list[ProfileStatus]]:
    """api aligned and proven, core running a stale release, mcp never promoted."""
    layout = Layout(tmp_path / "root")
    proc = tmp_path / "proc"
    a = add_release(layout, "aaaaaaa", "one", 1)
    b = add_release(layout, "bbbbbbb", "two", 2)
    add_release(layout, "ccccccc", "unused", 3)
    link(layout, "api", "current", b)
    link(layout, "api", "previous", a)
    run_process(layout, proc, "api", 101, b, sha="bbbbbbb")
    link(layout, "core", "current", a)
    run_process(layout, proc, "core", 102, b, sha="bbbbbbb")
    layout.proofs.mkdir(parents=True)
    proof = {"profile": "api", "time": "2023-11-14T22:13:20Z", "isolated": True,
             "checks": [{"name": "cross-read", "result": "passed", "evidence": "EACCES"}],
             "signature": {"key": "0123456789abcdef", "value": "c2ln"}}
    (layout.proofs / "api.json").write_text(json.dumps(proof, indent=1))
    sandbox = layout.sandbox_state
    sandbox.mkdir(parents=True)
    (sandbox / "selftest.json").write_text(json.dumps(
        {"time": "2023-11-14T22:00:00Z", "backend": "kvm", "ok": True}))
    (sandbox / "execs.jsonl").write_text("".join(
        json.dumps({"profile": p, "exit_code": 0, "backend": "kvm"}) + "\n"
        for p in ("api", "core", "api")))
    cfg = config(tmp_path)
    sd = FakeSystemd([service("api", 101, started=NOW - 200), service("core", 102)])
    return layout, cfg, collect_status(layout, cfg, sd, now=NOW, proc=proc)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    layout, cfg, statuses = fabricate(tmp_path)
    clock = Clock()
    provided: list[int] = []

    def provider(c: Config) -> list[ProfileStatus]:
        provided.append(1)
        return statuses

    app = create_app(layout, lambda: cfg, provider, Options(
        token=TOKEN, accounts=FakeAccounts(), clock=clock, now=lambda: NOW))
    yield Host(layout, cfg, clock, app, provided)



@contextmanager
def running(server: uvicorn.Server, sockets: list[socket.socket]) -> Iterator[None]:
    """``server`` serving ``sockets`` in a thread for the block; stopped and joined after."""
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        thread.join(10)
