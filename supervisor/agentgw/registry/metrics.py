"""Prometheus text exposition (format 0.0.4) of the profiles' status. Pure.

A sample whose value is unknown (no promote yet, no proof) is left out rather than invented.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agentgw.model.status import ProfileStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Value = Callable[[ProfileStatus], float | None]

# name, type, help, value
METRICS: tuple[tuple[str, str, str, Value], ...] = (
    ("agentgw_profile_up", "gauge", "1 when the profile's unit is active",
     lambda s: 1.0 if s.up else 0.0),
    ("agentgw_profile_aligned", "gauge",
     "1 when the running process imports exactly the promoted release (0: no or unknown)",
     lambda s: 1.0 if s.aligned.state == "yes" else 0.0),
    ("agentgw_profile_aligned_known", "gauge", "1 when alignment could be decided",
     lambda s: 0.0 if s.aligned.state == "unknown" else 1.0),
    ("agentgw_profile_isolated", "gauge",
     "1 when every isolation proof passed on the running unit",
     lambda s: 1.0 if s.isolation.state == "isolated" else 0.0),
    ("agentgw_profile_restarts_total", "counter", "automatic restarts of the unit (NRestarts)",
     lambda s: None if s.restarts is None else float(s.restarts)),
    ("agentgw_profile_memory_bytes", "gauge", "memory of the unit's cgroup (MemoryCurrent)",
     lambda s: None if s.memory_bytes is None else float(s.memory_bytes)),
    ("agentgw_profile_last_promote_timestamp_seconds", "gauge",
     "time of the last promote or rollback",
     lambda s: s.last_promote.timestamp if s.last_promote else None),
    ("agentgw_profile_proof_age_seconds", "gauge", "age of the last isolation proof record",
     lambda s: s.isolation.proof_age_s),
)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def render_metrics(statuses: Sequence[ProfileStatus]) -> str:
    lines: list[str] = []
    for name, kind, text, value in METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for status in statuses:
            found = value(status)
            if found is not None:
                lines.append(f'{name}{{profile="{escape_label(status.profile)}"}} {_number(found)}')
    lines += [
        "# HELP agentgw_profile_info the profile's release and verdicts, as labels",
        "# TYPE agentgw_profile_info gauge",
    ]
    for status in statuses:
        labels = {
            "profile": status.profile,
            "state": status.active_state,
            "release": status.release.name if status.release else "",
            "aligned": status.aligned.state,
            "isolation": status.isolation.state,
        }
        shown = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        lines.append(f"agentgw_profile_info{{{shown}}} 1")
    return "\n".join(lines) + "\n"
