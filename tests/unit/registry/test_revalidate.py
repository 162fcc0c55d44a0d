"""``Cache-Control: no-cache`` (agentgw status): a snapshot is reused only while provably
current — no unit signal, no input file changed, younger than FRESH_S — else retaken."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentgw.config.load import Config
from agentgw.model.status import ProfileStatus
from agentgw.registry.app import FRESH_S, Options, create_app
from agentgw.registry.auth import Connection, Peer, with_connection

from .conftest import NOW, Client, Clock, FakeAccounts, fabricate

NO_CACHE = {"Cache-Control": "no-cache"}


@dataclass
class FakeWatch:
    """Stands in for bus.watch.UnitWatch: ``generation`` moves when a test says systemd
    signalled; ``poll`` counts the calls (the registry must poll before trusting)."""

    generation: int = 0
    polls: int = 0
    broken: bool = False
    closed: bool = False

    def poll(self) -> int:
        self.polls += 1
        if self.broken:
            from agentgw.errors import AgentgwError

            raise AgentgwError("connection reset")
        return self.generation

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self.closed = True


def make(tmp_path: Path) -> tuple[Client, FakeWatch, list[int], list[str], Clock]:
    layout, cfg, statuses = fabricate(tmp_path)
    loads: list[int] = []
    inputs = ["v1"]
    clock = Clock()

    def provider(c: Config) -> list[ProfileStatus]:
        loads.append(1)
        return statuses

    watch = FakeWatch()
    app = create_app(layout, lambda: cfg, provider, Options(
        accounts=FakeAccounts(), clock=clock, now=lambda: NOW,
        watch=watch,  # type: ignore[arg-type]
        inputs=lambda c: inputs[0]))
    root = Connection("unix", Peer(pid=4000, uid=0, gid=0, groups=()))
    return Client(with_connection(app, root)), watch, loads, inputs, clock


def test_current_snapshot_is_reused_and_any_change_retakes_it(tmp_path: Path) -> None:
    client, watch, loads, inputs, clock = make(tmp_path)
    assert client.get("/v1/profiles", headers=NO_CACHE).status_code == 200
    assert client.get("/v1/profiles", headers=NO_CACHE).status_code == 200
    assert len(loads) == 1 and watch.polls == 2
    watch.generation += 1  # systemd signalled a change of a gateway unit
    client.get("/v1/profiles", headers=NO_CACHE)
    assert len(loads) == 2
    inputs[0] = "v2"  # a symlink flipped, a proof or launch record was written, ...
    client.get("/v1/profiles", headers=NO_CACHE)
    assert len(loads) == 3
    clock.t += FRESH_S  # nothing changed, but uptimes and ages have moved on
    client.get("/v1/profiles", headers=NO_CACHE)
    assert len(loads) == 4
    client.get("/v1/profiles", headers=NO_CACHE)
    assert len(loads) == 4


def test_plain_requests_keep_the_ttl_cache(tmp_path: Path) -> None:
    """Without no-cache, a change does not force a reload within the TTL (the page, metrics
    scrapers): only status-like callers pay for revalidation."""
    client, watch, loads, _, _ = make(tmp_path)
    client.get("/v1/profiles")
    watch.generation += 1
    client.get("/v1/profiles")
    assert len(loads) == 1 and watch.polls == 0


def test_a_broken_watch_is_dropped_and_every_revalidation_retakes(tmp_path: Path) -> None:
    client, watch, loads, _, _ = make(tmp_path)
    client.get("/v1/profiles", headers=NO_CACHE)
    watch.broken = True
    client.get("/v1/profiles", headers=NO_CACHE)
    client.get("/v1/profiles", headers=NO_CACHE)
    assert watch.closed and len(loads) == 3


def test_health_says_whether_the_units_are_watched(tmp_path: Path) -> None:
    client, watch, _, _, _ = make(tmp_path)
    assert client.get("/health").json()["unit_watch"] is True
    watch.broken = True
    client.get("/v1/profiles", headers=NO_CACHE)
    assert client.get("/health").json()["unit_watch"] is False
