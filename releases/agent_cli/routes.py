"""The gateway's routes: each a function from Request to Response, registered on a Router.

To add a route, write its handler here (or in a module of its own) and register it in
``gateway_routes``; server.py needs no change.
"""

from __future__ import annotations

import os

from agent_cli.server import Handler, Request, Response, Router
from agent_cli.settings import Release, Settings


def health(settings: Settings, release: Release) -> Handler:
    """GET /health: which profile this is and which release it runs (the promote check)."""

    def handler(request: Request) -> Response:
        healthy = release.variant != "unhealthy"
        body = {
            "status": "ok" if healthy else "unhealthy",
            "profile": settings.profile,
            "sha": release.reported_sha,
            "label": release.label,
            "pid": os.getpid(),
        }
        return Response(200 if healthy else 503, body)

    return handler


def add_health(router: Router, settings: Settings, release: Release) -> None:
    """At /health and at the profile's own health path (AGENT_HEALTH_PATH), when it differs."""
    handler = health(settings, release)
    for path in sorted({"/health", settings.health_path}):
        router.add("GET", path, handler)


def gateway_routes(settings: Settings, release: Release) -> Router:
    router = Router()
    add_health(router, settings, release)
    return router
