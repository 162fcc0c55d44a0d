"""The registry's routes over a fabricated host, called as root (who sees everything)."""

from __future__ import annotations

import json

import pytest

from agentgw.registry.app import routes_of
from tests.unit.registry.conftest import TOKEN, Host

ROUTES = ["/", "/health", "/openapi.json", "/v1/profiles", "/v1/profiles/api",
          "/v1/profiles/api/proofs", "/v1/releases", "/v1/sandbox", "/metrics"]


@pytest.mark.parametrize("path", ROUTES)
def test_every_route_answers_get_and_head(host: Host, path: str) -> None:
    """GET gives 200 with a body; HEAD gives 200, the same type, and no body."""
    client = host.client(0)
    got, head = client.get(path), client.head(path)
    assert (200, 200) == (got.status_code, head.status_code)
    assert got.content and not head.content
    assert got.headers["content-type"] == head.headers["content-type"]
    assert "no-store" == got.headers["cache-control"]


def test_profiles_list_and_one_profile(host: Host) -> None:
    """The list carries every profile with its verdicts; one profile is the same record."""
    client = host.client(0)
    doc = client.get("/v1/profiles").json()
    assert "production" == doc["isolation_mode"]
    assert [("api", "yes", "isolated"), ("core", "no", "unproven"), ("mcp", "unknown", "unproven")
            ] == [(p["profile"], p["aligned"]["state"], p["isolation"]["state"])
                  for p in doc["profiles"]]
    assert doc["profiles"][0] == client.get("/v1/profiles/api").json()


def test_proof_record_is_served_byte_for_byte(host: Host) -> None:
    """The signature covers the stored bytes, so they are served unchanged (not re-encoded)."""
    got = host.client(0).get("/v1/profiles/api/proofs")
    assert (host.layout.proofs / "api.json").read_bytes() == got.content
    missing = host.client(0).get("/v1/profiles/core/proofs")
    assert (404, "no proof record for profile core") == (missing.status_code,
                                                        missing.json()["error"])


def test_releases_with_their_users(host: Host) -> None:
    """Every release dir with its manifest head and the profiles whose links point at it."""
    releases = host.client(0).get("/v1/releases").json()["releases"]
    shown = {r["name"]: (r["version"], sorted((u["profile"], u["slot"]) for u in r["used_by"]))
             for r in releases}
    assert {
        "aaaaaaa-one": (1, [("api", "previous"), ("core", "current")]),
        "bbbbbbb-two": (2, [("api", "current")]),
        "ccccccc-unused": (3, []),
    } == shown


def test_sandbox_reports_the_recorded_backend(host: Host) -> None:
    """Backend and KVM come from the broker's self-test record; execs are the newest ones."""
    doc = host.client(0).get("/v1/sandbox").json()
    assert ("kvm", True, 3) == (doc["backend"], doc["kvm"], len(doc["recent_execs"]))
    assert doc["selftest_age_s"] == 1_700_000_100.0 - 1_700_000_000.0 + 800


def test_sandbox_without_records_says_unknown(host: Host) -> None:
    """No self-test record: backend unknown and KVM null, never a guess."""
    host.layout.sandbox_selftest.unlink()
    host.layout.sandbox_execs.unlink()
    doc = host.client(0).get("/v1/sandbox").json()
    assert ("unknown", None, None, []) == (doc["backend"], doc["kvm"], doc["selftest"],
                                           doc["recent_execs"])


def test_page_is_self_contained_html_with_the_table(host: Host) -> None:
    """The page has the table with one row per profile, inline CSS only, and a CSP saying so."""
    got = host.client(0).get("/")
    assert got.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in got.headers["content-security-policy"]
    html = got.text
    assert '<table id="profiles">' in html
    assert 3 == html.count("<tr data-profile=")
    assert "<script" not in html and "src=" not in html and "stylesheet" not in html


def test_unknown_path_and_profile_are_404_json(host: Host) -> None:
    """Unknown paths and profiles (and invalid names) answer 404 with a JSON error."""
    client = host.client(0)
    for path in ("/nope", "/v1/profiles/nosuch", "/v1/profiles/Bad..Name", "/v1/profiles/x/y"):
        got = client.get(path)
        assert (404, "application/json") == (got.status_code, got.headers["content-type"])
        assert {"error", "hint", "status"} == set(got.json())


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("path", [*ROUTES, "/nope", "/v1/profiles/nosuch"])
def test_every_other_method_is_405_json(host: Host, method: str, path: str) -> None:
    """Anything but GET/HEAD is refused on every path, known or not, before any work."""
    got = host.client(0).request(method, path, content=b'{"x": 1}')
    assert (405, "GET, HEAD") == (got.status_code, got.headers["allow"])
    assert 405 == got.json()["status"]
    assert [] == host.provided, "a refused method must not even read the host"


def test_snapshot_is_cached_for_the_ttl(host: Host) -> None:
    """Many requests within the TTL cost one status collection. Just after it, the old
    snapshot is served while one background reload runs; much later, the request waits."""
    client = host.client(0)
    snapshots = host.app.state.registry.snapshots
    for _ in range(50):
        assert 200 == client.get("/v1/profiles").status_code
    assert 1 == len(host.provided)
    host.clock.t += 1.5
    assert 200 == client.get("/metrics").status_code
    snapshots.wait_idle()
    assert 2 == len(host.provided)
    client.get("/metrics")
    assert 2 == len(host.provided)
    host.clock.t += 60
    client.get("/metrics")
    assert 3 == len(host.provided)


def test_openapi_documents_every_route_with_get_and_head(host: Host) -> None:
    """The document is OpenAPI 3.1 JSON; each served route is a path with get and head, and
    every $ref resolves to a component schema."""
    doc = host.client(0).get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert sorted(routes_of(host.app)) == sorted(doc["paths"])
    for ops in doc["paths"].values():
        assert {"get", "head"} == set(ops)
    text = json.dumps(doc)
    refs = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert refs and refs <= set(doc["components"]["schemas"])


def test_tcp_needs_the_bearer_token(host: Host) -> None:
    """On TCP: no or wrong token -> 401 with WWW-Authenticate; the right one sees all."""
    client = host.client(tcp=True)
    assert 401 == client.get("/v1/profiles").status_code
    wrong = client.get("/v1/profiles", headers={"Authorization": "Bearer nope"})
    assert (401, "Bearer") == (wrong.status_code, wrong.headers["www-authenticate"][:6])
    ok = client.get("/v1/profiles", headers={"Authorization": f"Bearer {TOKEN.decode()}"})
    assert (200, 3) == (ok.status_code, len(ok.json()["profiles"]))
