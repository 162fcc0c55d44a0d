"""The ``OnFailure=`` hook of the gateway template: record the failure, call the webhook.

systemd starts ``agentgw-onfailure@<profile>.service`` when ``agent-gateway@<profile>`` enters
the failed state for good (not on an automatic restart), and passes the failed unit's outcome
in ``MONITOR_*`` variables (systemd >= 251). The failure goes into the hash-chained history
first, so a webhook that is down loses nothing.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from agentgw.apply.history import append_history
from agentgw.config.load import Config
from agentgw.errors import AgentgwError
from agentgw.observe.status import iso
from agentgw.paths import Layout, unit_name

EVENT = "gateway_failed"
WEBHOOK_TIMEOUT_S = 5.0
# What systemd tells an OnFailure= unit about the unit that failed, by history detail key.
MONITOR: dict[str, str] = {
    "unit": "MONITOR_UNIT",
    "service_result": "MONITOR_SERVICE_RESULT",
    "exit_code": "MONITOR_EXIT_CODE",
    "exit_status": "MONITOR_EXIT_STATUS",
    "invocation_id": "MONITOR_INVOCATION_ID",
}


def failure_event(
    profile: str, env: Mapping[str, str], *, now: float, hostname: str
) -> dict[str, Any]:
    """The webhook payload (and, without event/profile/time, the history detail)."""
    detail = {key: env[var] for key, var in MONITOR.items() if env.get(var)}
    detail.setdefault("unit", unit_name(profile))
    return {"event": EVENT, "profile": profile, "host": hostname, "time": iso(now), **detail}


def post_webhook(url: str, payload: Mapping[str, Any]) -> int:
    """POST the payload as JSON; the HTTP status, or an error naming the URL."""
    request = urllib.request.Request(  # noqa: S310 - the config allows only http(s) URLs
        url,
        data=json.dumps(payload, sort_keys=True).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "agentgw-onfailure"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:  # noqa: S310
            return int(response.status)
    except (urllib.error.URLError, OSError) as exc:
        raise AgentgwError(
            f"webhook {url} failed: {getattr(exc, 'reason', exc)}",
            hint="the failure is recorded in the history; check the webhook in agentgw.yaml",
        ) from exc


def record_failure(
    layout: Layout, config: Config, profile: str, env: Mapping[str, str]
) -> dict[str, Any]:
    """Append the failure to history, then notify the webhook (when one is configured)."""
    event = failure_event(profile, env, now=time.time(), hostname=socket.gethostname())
    detail = {k: v for k, v in event.items() if k not in ("event", "profile", "time")}
    append_history(layout.history, "failure", "failed", profile, **detail)
    if config.host.webhook is not None:
        event["webhook_status"] = post_webhook(config.host.webhook, event)
    return event
