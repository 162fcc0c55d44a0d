"""The gateway's routes: each a function from Request to Response, registered on a Router.

To add a route, write its handler here (or in a module of its own) and register it in
``gateway_routes``; server.py needs no change.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from agent_cli.server import Handler, Request, Response, Router
from agent_cli.settings import Release, Settings

SANDBOX_CLIENT = "agentgw_sandbox.py"  # installed by agentgw init beside the launcher
EXEC_FIELDS = frozenset({"argv", "stdin", "timeout_s"})


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
        if release.variant == "deephealth":
            # 64 KiB of '[': parsing it recurses past any JSON parser's limit.
            return Response(200, {}, raw=b"[" * 65536)
        return Response(200 if healthy else 503, body)

    return handler


def add_health(router: Router, settings: Settings, release: Release) -> None:
    """At /health and at the profile's own health path (AGENT_HEALTH_PATH), when it differs."""
    handler = health(settings, release)
    for path in sorted({"/health", settings.health_path}):
        router.add("GET", path, handler)


def client_path(release: Release) -> Path:
    """agentgw's sandbox client: in ``_lib`` beside ``releases/``, where ``agentgw init``
    installs it (/opt/agent/_lib/agentgw_sandbox.py on a host)."""
    return release.root.parent.parent / "_lib" / SANDBOX_CLIENT


def load_client(path: Path) -> ModuleType:
    """The client loaded from its file: /opt/agent/_lib is never put on sys.path, so nothing
    else there (the launcher) becomes importable by the runtime."""
    spec = importlib.util.spec_from_file_location("agentgw_sandbox", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_exec_body(body: Any) -> tuple[list[str], bytes, float | None]:
    """(argv, stdin, timeout) from {"argv": [..], "stdin": "text", "timeout_s": n}."""
    if not isinstance(body, dict) or set(body) - EXEC_FIELDS:
        raise ValueError(f"expected a JSON object with {', '.join(sorted(EXEC_FIELDS))}")
    argv = body.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    stdin = body.get("stdin", "")
    if not isinstance(stdin, str):
        raise ValueError("stdin must be a string")
    timeout = body.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
        raise ValueError("timeout_s must be a number")
    return argv, stdin.encode(), timeout


def sandbox_exec(release: Release) -> Handler:
    """POST /exec: run {"argv", "stdin"} in a microVM through the host's sandbox broker (never
    in this process) and answer with its exit code and output (as text)."""
    path = client_path(release)
    loaded: list[ModuleType] = []

    def handler(request: Request) -> Response:
        try:
            argv, stdin, timeout = check_exec_body(request.json())
        except ValueError as exc:
            return Response(400, {"error": str(exc)})
        if not loaded:
            try:
                loaded.append(load_client(path))
            except (OSError, ImportError) as exc:
                return Response(503, {"error": "unavailable", "message": f"no client: {exc}"})
        client = loaded[0]
        try:
            result = client.run(argv, stdin=stdin, timeout=timeout)
        except client.SandboxError as exc:
            status = 503 if exc.kind in ("busy", "unavailable", "unreachable") else 502
            return Response(status, {"error": exc.kind, "message": exc.message})
        body = {k: v for k, v in result.items() if k not in ("stdout", "stderr")}
        body["stdout"] = result["stdout"].decode("utf-8", "replace")
        body["stderr"] = result["stderr"].decode("utf-8", "replace")
        return Response(200, body)

    return handler


def gateway_routes(settings: Settings, release: Release) -> Router:
    router = Router()
    add_health(router, settings, release)
    router.add("POST", "/exec", sandbox_exec(release))
    return router
