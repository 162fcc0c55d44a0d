"""Prometheus text exposition (format 0.0.4) of the profiles' status, rendered by
prometheus_client from the status rows (pure: rows in, text out).

Label sets are stable: a profile's series keep their labels across promotes and state changes
(the state is a state set, one series per possible state, 1 for the current one), except
``agentgw_profile_release_info``, whose ``release`` label moves with each promote, as an info
metric's does. A sample whose value is unknown (no promote yet, no proof) is left out rather
than invented.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from agentgw.model.status import ProfileStatus
from agentgw.observe.counts import Counts

# The classic text format, which generate_latest writes for these (plain ASCII) names.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Value = Callable[[ProfileStatus], float | None]

# systemd's ActiveState values, plus "unknown" (no systemd): the state set's members.
STATES = ("active", "reloading", "inactive", "failed", "activating", "deactivating",
          "maintenance", "refreshing", "unknown")

GAUGES: tuple[tuple[str, str, Value], ...] = (
    ("agentgw_profile_up", "1 when the profile's unit is active",
     lambda s: 1.0 if s.up else 0.0),
    ("agentgw_profile_aligned",
     "1 when the running process imports exactly the promoted release (0: no or unknown)",
     lambda s: 1.0 if s.aligned.state == "yes" else 0.0),
    ("agentgw_profile_aligned_known", "1 when alignment could be decided",
     lambda s: 0.0 if s.aligned.state == "unknown" else 1.0),
    ("agentgw_profile_isolated", "1 when every isolation proof passed on the running unit",
     lambda s: 1.0 if s.isolation.state == "isolated" else 0.0),
    ("agentgw_profile_memory_bytes", "memory of the unit's cgroup (MemoryCurrent)",
     lambda s: None if s.memory_bytes is None else float(s.memory_bytes)),
    ("agentgw_profile_last_promote_timestamp_seconds", "time of the last promote or rollback",
     lambda s: s.last_promote.timestamp if s.last_promote else None),
    ("agentgw_profile_proof_age_seconds", "age of the last isolation proof record",
     lambda s: s.isolation.proof_age_s),
)


def agentgw_version() -> str:
    try:
        return version("agentgw")
    except PackageNotFoundError:
        return "unknown"


class _Statuses:
    """A one-shot collector over status rows (prometheus_client's custom-collector shape)."""

    def __init__(self, statuses: Sequence[ProfileStatus], counts: Counts) -> None:
        self.statuses = statuses
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("agentgw_build_info", "agentgw's version, always 1",
                                  labels=["version", "python"])
        build.add_metric([agentgw_version(), platform.python_version()], 1.0)
        yield build
        for name, text, value in GAUGES:
            family = GaugeMetricFamily(name, text, labels=["profile"])
            for status in self.statuses:
                found = value(status)
                if found is not None:
                    family.add_metric([status.profile], found)
            yield family
        restarts = CounterMetricFamily("agentgw_profile_restarts",
                                       "automatic restarts of the unit (NRestarts)",
                                       labels=["profile"])
        for status in self.statuses:
            if status.restarts is not None:
                restarts.add_metric([status.profile], float(status.restarts))
        yield restarts
        state = GaugeMetricFamily("agentgw_profile_state",
                                  "the unit's ActiveState: 1 for the current one",
                                  labels=["profile", "state"])
        info = GaugeMetricFamily("agentgw_profile_release_info",
                                 "the release current points at, always 1",
                                 labels=["profile", "release"])
        for status in self.statuses:
            current = status.active_state if status.active_state in STATES else "unknown"
            for member in STATES:
                state.add_metric([status.profile, member], 1.0 if member == current else 0.0)
            if status.release is not None:
                info.add_metric([status.profile, status.release.name], 1.0)
        yield state
        yield info
        yield from self._counters()

    def _counters(self) -> Iterator[Metric]:
        promotes = CounterMetricFamily(
            "agentgw_promotes", "promotes and rollbacks by result (from the history log)",
            labels=["profile", "op", "result"])
        for (profile, op, result), n in sorted(self.counts.promotes.items()):
            promotes.add_metric([profile, op, result], float(n))
        yield promotes
        execs = CounterMetricFamily(
            "agentgw_sandbox_execs", "sandbox execs by result: ok, nonzero, timed_out, error",
            labels=["profile", "result"])
        for (profile, result), n in sorted(self.counts.execs.items()):
            execs.add_metric([profile, result], float(n))
        yield execs


def render_metrics(statuses: Sequence[ProfileStatus], counts: Counts | None = None) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Statuses(statuses, counts or Counts()))
    return generate_latest(registry).decode()
