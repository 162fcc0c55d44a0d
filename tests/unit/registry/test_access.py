"""Who sees what: root and the admin group see all, agent-<p> sees only <p>, others get 403."""

from __future__ import annotations

import pytest

from agentgw.config.load import Config
from agentgw.errors import usage
from agentgw.registry.app import Options, create_app
from agentgw.registry.auth import Connection, Peer, Refused, authorize, with_connection
from tests.unit.registry.conftest import ADMIN_GID, NOW, TOKEN, Client, Clock, FakeAccounts, Host
from tests.unit.status.support import config

API = 1001


def test_profile_user_sees_only_its_profile_everywhere(host: Host) -> None:
    """agent-api: lists hold api only; other profiles (and their proofs) are 404, not 403."""
    client = host.client(API)
    assert ["api"] == [p["profile"] for p in client.get("/v1/profiles").json()["profiles"]]
    assert 200 == client.get("/v1/profiles/api").status_code
    for path in ("/v1/profiles/core", "/v1/profiles/mcp", "/v1/profiles/core/proofs"):
        assert 404 == client.get(path).status_code, path
    metrics = client.get("/metrics").text
    assert 'profile="api"' in metrics and 'profile="core"' not in metrics
    page = client.get("/").text
    assert 1 == page.count("<tr data-profile=") and 'data-profile="api"' in page


def test_profile_user_sees_only_releases_and_execs_of_its_profile(host: Host) -> None:
    """Releases not used by api are hidden; used_by names api only; execs are api's."""
    client = host.client(API)
    releases = client.get("/v1/releases").json()["releases"]
    assert {"aaaaaaa-one": [("api", "previous")], "bbbbbbb-two": [("api", "current")]} == {
        r["name"]: [(u["profile"], u["slot"]) for u in r["used_by"]] for r in releases}
    execs = client.get("/v1/sandbox").json()["recent_execs"]
    assert ["api", "api"] == [e["profile"] for e in execs]


@pytest.mark.parametrize(
    ("uid", "groups"),
    [(0, ()), (1500, (ADMIN_GID,)), (ADMIN_GID, ())],
    ids=["root", "admin-supplementary", "admin-primary"],
)
def test_root_and_admin_group_see_every_profile(
    host: Host, uid: int, groups: tuple[int, ...]
) -> None:
    """Root, and a member of admin_group (primary or supplementary group), see all."""
    got = host.client(uid, groups=groups).get("/v1/profiles")
    assert (200, ["api", "core", "mcp"]) == (
        got.status_code, [p["profile"] for p in got.json()["profiles"]])


@pytest.mark.parametrize("uid", [1500, 1600, 65534, 4242])
def test_any_other_uid_is_refused_on_every_protected_route(host: Host, uid: int) -> None:
    """A uid that is neither root, admin nor a profile's user gets 403 JSON."""
    client = host.client(uid)
    for path in ("/", "/v1/profiles", "/v1/profiles/api", "/v1/releases", "/v1/sandbox",
                 "/metrics"):
        got = client.get(path)
        assert (403, 403) == (got.status_code, got.json()["status"]), path


def test_health_and_openapi_are_open_to_any_connected_caller(host: Host) -> None:
    """/health and /openapi.json reveal nothing about profiles, so any caller may read them."""
    client = host.client(1600)
    assert (200, 200) == (client.get("/health").status_code,
                          client.get("/openapi.json").status_code)


def test_unidentified_connection_is_refused(host: Host) -> None:
    """A request that did not come through our server's protocol has no identity: 403."""
    assert 403 == host.client(None).get("/v1/profiles").status_code


def test_convenience_mode_shared_user_sees_all_and_none_is_isolated(host: Host) -> None:
    """In convenience mode every profile runs as agent-shared: that user sees them all (they
    are not isolated from each other anyway) and agent-api sees none (403)."""
    host_cfg = config(host.layout.root, isolation="convenience").host

    class Shared(FakeAccounts):
        def user_name(self, uid: int) -> str | None:
            return "agent-shared" if uid == 2000 else super().user_name(uid)

    def who(uid: int) -> frozenset[str] | None:
        return authorize(Connection("unix", Peer(1, uid, uid)), None, host=host_cfg,
                         profiles=("api", "core"), token=None, accounts=Shared()).profiles

    assert frozenset({"api", "core"}) == who(2000)
    with pytest.raises(Refused, match="may not read"):
        who(API)


def test_oversized_request_headers_are_refused_with_431(host: Host) -> None:
    """More than 16 KiB of headers: 431 before any route runs; 15 KiB is fine."""
    client = host.client(0)
    big = client.get("/v1/profiles", headers={"X-Pad": "a" * 64 * 1024})
    assert big.status_code == 431 and "16384 allowed" in big.json()["error"]
    assert client.get("/v1/profiles", headers={"X-Pad": "a" * 15 * 1024}).status_code == 200


def test_a_profile_user_gets_its_proof_without_sibling_details(host: Host) -> None:
    """agent-api reads its own proof as names, results and counts (no sibling paths, pids or
    addresses); root gets the stored, signed record byte for byte."""
    stored = (host.layout.proofs / "api.json").read_bytes()
    assert host.client(0).get("/v1/profiles/api/proofs").content == stored
    view = host.client(API).get("/v1/profiles/api/proofs").json()
    assert view["profile"] == "api" and "redacted" in view
    text = str(view)
    for detail in ("/opt/agent/gateways/core", "127.77.0.2", "evidence", "signature"):
        assert detail not in text


def test_a_broken_config_is_explained_to_root_only(host: Host) -> None:
    """When the configuration does not load, the error quotes it: root gets it, a profile's
    user gets a 503 that says nothing of it."""
    def broken() -> Config:
        raise usage("gateways/core.yaml:3: env: SECRET_VALUE_42 is reserved")

    app = create_app(host.layout, broken, lambda c: [], Options(
        token=TOKEN, accounts=FakeAccounts(), clock=Clock(), now=lambda: NOW))

    def client(uid: int) -> Client:
        return Client(with_connection(app, Connection("unix", Peer(4000, uid, uid, ()))))

    refused = client(API).get("/v1/profiles")
    assert refused.status_code == 503 and "SECRET_VALUE_42" not in refused.text
    assert "SECRET_VALUE_42" in client(0).get("/v1/profiles").text


def test_a_refused_caller_costs_no_snapshot(host: Host) -> None:
    """Once a snapshot is held, a caller who may not read the registry is refused against its
    configuration before anything is computed (no-cache or not)."""
    assert host.client(0).get("/v1/profiles").status_code == 200
    taken = len(host.provided)
    for _ in range(3):
        refused = host.client(1600).get("/v1/profiles", headers={"Cache-Control": "no-cache"})
        assert refused.status_code == 403
    assert len(host.provided) == taken
