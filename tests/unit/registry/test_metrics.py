"""/metrics is valid Prometheus text format 0.0.4 and carries each profile's figures."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from agentgw.registry.metrics import STATES
from tests.unit.registry.conftest import Host

API = 1001  # agent-api (conftest USERS)

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(
    rf"^(?P<name>{NAME})(?:\{{(?P<labels>{NAME}={LABEL_VALUE}(?:,{NAME}={LABEL_VALUE})*)\}})? "
    r"(?P<value>[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|NaN|[-+]?Inf))$"
)
HELP = re.compile(rf"^# HELP (?P<name>{NAME}) .+$")
TYPE = re.compile(rf"^# TYPE (?P<name>{NAME}) (?P<type>counter|gauge|untyped)$")


def parse(text: str) -> dict[tuple[str, str], float]:
    """Every sample as (name, labels) -> value; fails on any line the format does not allow."""
    assert text.endswith("\n")
    typed: set[str] = set()
    helped: set[str] = set()
    samples: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if m := HELP.match(line):
            helped.add(m["name"])
        elif m := TYPE.match(line):
            assert m["name"] not in typed, f"TYPE twice: {line}"
            typed.add(m["name"])
        else:
            m = SAMPLE.match(line)
            assert m is not None, f"not a sample line: {line!r}"
            assert m["name"] in typed and m["name"] in helped, f"undeclared: {line}"
            key = (m["name"], m["labels"] or "")
            assert key not in samples, f"duplicate sample: {line}"
            samples[key] = float(m["value"])
    return samples


def test_metrics_parse_and_hold_each_profiles_figures(host: Host) -> None:
    """Up, aligned, isolated, restarts, last promote and proof age per profile; unknown values
    are absent rather than invented; build info; the state as a state set; the release as an
    info series. Parsed twice: by this test's strict 0.0.4 grammar and by prometheus_client's."""
    got = host.client(0).get("/metrics")
    assert got.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(got.text)
    families = {f.name: f for f in text_string_to_metric_families(got.text)}
    assert families["agentgw_profile_restarts"].type == "counter"

    def value(name: str, profile: str) -> float | None:
        return samples.get((name, f'profile="{profile}"'))

    assert (1.0, 1.0, 1.0) == tuple(value(n, "api") for n in (
        "agentgw_profile_up", "agentgw_profile_aligned", "agentgw_profile_isolated"))
    assert (1.0, 0.0, 1.0) == tuple(value(n, "core") for n in (
        "agentgw_profile_up", "agentgw_profile_aligned", "agentgw_profile_aligned_known"))
    assert (0.0, 0.0) == (value("agentgw_profile_up", "mcp"),
                          value("agentgw_profile_aligned_known", "mcp"))
    assert 2.0 == value("agentgw_profile_restarts_total", "api")
    assert 100.0 == value("agentgw_profile_proof_age_seconds", "api")
    assert value("agentgw_profile_proof_age_seconds", "core") is None
    assert value("agentgw_profile_last_promote_timestamp_seconds", "api") is None
    (build,) = [k for k in samples if k[0] == "agentgw_build_info"]
    assert 'version="' in build[1]
    api_states = {k[1]: v for k, v in samples.items()
                  if k[0] == "agentgw_profile_state" and 'profile="api"' in k[1]}
    assert len(api_states) == len(STATES) and sum(api_states.values()) == 1.0
    assert api_states['profile="api",state="active"'] == 1.0
    assert ("agentgw_profile_release_info", 'profile="api",release="bbbbbbb-two"') in samples


def test_label_sets_do_not_move_with_the_state(host: Host) -> None:
    """Every series but the release info keeps its labels whatever a profile's state: the
    set of (name, labels) is the same for every profile, whichever state it is in."""
    samples = parse(host.client(0).get("/metrics").text)
    shapes: dict[str, set[tuple[str, str]]] = {}
    for name, labels in samples:
        if name in ("agentgw_build_info", "agentgw_profile_release_info"):
            continue
        for profile in ("api", "core", "mcp"):
            if f'profile="{profile}"' in labels:
                shape = labels.replace(f'profile="{profile}"', 'profile="P"')
                shapes.setdefault(profile, set()).add((name, shape))
    always = {("agentgw_profile_state", f'profile="P",state="{s}"') for s in STATES}
    assert all(always <= shape for shape in shapes.values()), shapes


HISTORY = [
    {"action": "promote", "profile": "api", "result": "ok"},
    {"action": "promote", "profile": "api", "result": "rolled_back"},
    {"action": "promote", "profile": "api", "result": "ok"},
    {"action": "rollback", "profile": "api", "result": "ok"},
    {"action": "promote", "profile": "core", "result": "ok"},
    {"action": "apply", "profile": "core", "result": "ok"},
]


def test_counters_by_result_and_each_caller_sees_its_own(host: Host) -> None:
    """Promotes and rollbacks by (profile, op, result) from the history log, sandbox execs by
    (profile, result) from execs.jsonl; a profile's user sees only its own; the counters follow
    the files (an appended record counts at the next scrape)."""
    host.layout.history.parent.mkdir(parents=True, exist_ok=True)
    host.layout.history.write_text(
        "".join(json.dumps(r) + "\n" for r in HISTORY) + "not json\n")
    root = parse(host.client(0).get("/metrics").text)
    promotes = {k[1]: v for k, v in root.items() if k[0] == "agentgw_promotes_total"}
    assert promotes == {
        'op="promote",profile="api",result="ok"': 2.0,
        'op="promote",profile="api",result="rolled_back"': 1.0,
        'op="rollback",profile="api",result="ok"': 1.0,
        'op="promote",profile="core",result="ok"': 1.0,
    }
    execs = {k[1]: v for k, v in root.items() if k[0] == "agentgw_sandbox_execs_total"}
    assert execs == {'profile="api",result="ok"': 2.0, 'profile="core",result="ok"': 1.0}
    mine = parse(host.client(API).get("/metrics").text)
    assert {k[1] for k in mine if k[0] == "agentgw_sandbox_execs_total"} == {
        'profile="api",result="ok"'}
    assert not [k for k in mine if 'profile="core"' in k[1]]
    with (host.layout.sandbox_state / "execs.jsonl").open("a") as f:
        f.write(json.dumps({"profile": "api", "exit_code": 3}) + "\n")
        f.write(json.dumps({"profile": "api", "exit_code": 124, "timed_out": True}) + "\n")
        f.write(json.dumps({"profile": "api", "exit_code": None, "error": "busy"}) + "\n")
    after = parse(host.client(0).get("/metrics").text)
    assert {k[1]: v for k, v in after.items() if k[0] == "agentgw_sandbox_execs_total"
            and 'profile="api"' in k[1]} == {
        'profile="api",result="ok"': 2.0, 'profile="api",result="nonzero"': 1.0,
        'profile="api",result="timed_out"': 1.0, 'profile="api",result="error"': 1.0}
