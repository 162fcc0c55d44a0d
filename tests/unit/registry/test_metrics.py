"""/metrics is valid Prometheus text format 0.0.4 and carries each profile's figures."""

from __future__ import annotations

import re

from agentgw.registry.metrics import escape_label
from tests.unit.registry.conftest import Host

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
    are absent rather than invented."""
    got = host.client(0).get("/metrics")
    assert got.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(got.text)

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
    info = [k for k in samples if k[0] == "agentgw_profile_info"]
    assert 3 == len(info)
    assert any('release="bbbbbbb-two",aligned="yes",isolation="isolated"' in k[1] for k in info)


def test_label_values_are_escaped() -> None:
    """Backslash, double quote and newline are escaped as the text format requires."""
    assert r'a\\b\"c\nd' == escape_label('a\\b"c\nd')
    assert SAMPLE.match(f'm{{l="{escape_label(chr(10) + chr(34) + chr(92))}"}} 1')
