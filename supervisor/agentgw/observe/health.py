"""The HTTP health check of a profile, run from the host against its own loopback address."""

from __future__ import annotations

import http.client
import time

from agentgw.fsio import clean, loads_untrusted
from agentgw.model.status import HealthAnswer as Health

BODY_CAP = 65536


def probe_health(host: str, port: int, path: str, *, timeout: float) -> Health:
    """One GET. The connection's source is the profile's own address: its unit's IP filter
    (IPAddressDeny=any + its own /32) drops packets from any other source, 127.0.0.1 included."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(host, 0))
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = response.read(BODY_CAP)
    except (OSError, http.client.HTTPException) as exc:
        # The gateway controls the answer: a broken status line, endless headers, a reset.
        why = clean(str(exc) or type(exc).__name__, 200)
        return Health(ok=False, reason=f"GET http://{host}:{port}{path}: {why}")
    finally:
        conn.close()
    sha: str | None = None
    try:
        data = loads_untrusted(body)
        if isinstance(data, dict) and isinstance(data.get("sha"), str):
            sha = clean(data["sha"], 64)
    except ValueError:
        pass
    if response.status != 200:
        return Health(ok=False, reason=f"GET {path} answered {response.status}", sha=sha)
    return Health(ok=True, reason=f"GET {path} answered 200", sha=sha)


def wait_healthy(
    host: str, port: int, path: str, *, timeout: float, expect_sha: str | None
) -> Health:
    """Poll until the gateway answers 200 (and reports ``expect_sha`` when it reports one)."""
    deadline = time.monotonic() + timeout
    last = Health(ok=False, reason="no answer yet")
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return Health(ok=False, reason=f"not healthy within {timeout:g}s: {last.reason}")
        last = probe_health(host, port, path, timeout=min(2.0, left))
        if last.ok and expect_sha is not None and last.sha is not None and last.sha != expect_sha:
            return Health(
                ok=False,
                reason=f"the gateway reports sha {last.sha}, the release is {expect_sha}",
                sha=last.sha,
            )
        if last.ok:
            return last
        time.sleep(0.1)
