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
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from agentgw.apply.history import append_history
from agentgw.config.load import Config
from agentgw.errors import AgentgwError
from agentgw.fsio import iso
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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following it would send the event (and the URL's token, in a
    Referer or the next URL) wherever the answering server says."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def redact(url: str) -> str:
    """The URL without what may be a secret: user info, path and query (tokens live there)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    rest = "/..." if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def post_webhook(url: str, payload: Mapping[str, Any]) -> int:
    """POST the payload as JSON, following no redirect; the HTTP status, or an error naming
    the URL with its secrets left out."""
    request = urllib.request.Request(  # noqa: S310 - the config allows only http(s) URLs
        url,
        data=json.dumps(payload, sort_keys=True).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "agentgw-onfailure"},
        method="POST",
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        why = f"answered {exc.code}" + (
            " (a redirect: not followed)" if 300 <= exc.code < 400 else ""
        )
    except (urllib.error.URLError, OSError) as exc:
        why = str(getattr(exc, "reason", exc)).replace(url, redact(url))
    raise AgentgwError(
        f"webhook {redact(url)} failed: {why}",
        hint="the failure is recorded in the history; check the webhook in agentgw.yaml",
    )


def record_failure(
    layout: Layout, config: Config, profile: str, env: Mapping[str, str]
) -> dict[str, Any]:
    """Append the failure to history, then notify the webhook (when one is configured)."""
    event = failure_event(profile, env, now=time.time(), hostname=socket.gethostname())
    detail = {k: v for k, v in event.items() if k not in ("event", "profile", "time")}
    append_history(layout.history, "failure", "failed", profile,
                   retention=config.host.rotation.retention(), **detail)
    if config.host.webhook is not None:
        event["webhook_status"] = post_webhook(config.host.webhook, event)
    return event
