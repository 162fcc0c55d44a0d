"""The ``mcp`` profile's script-mode entrypoint: a small MCP-style JSON-RPC endpoint over HTTP.

Run by the launcher as ``python -s $AGENT_ROOT/agent_cli/mcp_server.py``; imports agent_cli via
PYTHONPATH (the profile's current release). Serves ``POST /mcp`` (JSON-RPC 2.0: initialize,
ping, tools/list) and the same health route as the gateway.
"""

from __future__ import annotations

from typing import Any

from agent_cli import gateway
from agent_cli.routes import add_health
from agent_cli.server import Handler, Request, Response, Router
from agent_cli.settings import Release, Settings

PROTOCOL_VERSION = "2025-03-26"
METHOD_NOT_FOUND = -32601
PARSE_ERROR = -32700
INVALID_REQUEST = -32600


def rpc_error(ident: Any, code: int, message: str) -> Response:
    error = {"code": code, "message": message}
    return Response(200, {"jsonrpc": "2.0", "id": ident, "error": error})


def mcp(release: Release) -> Handler:
    results = {
        "initialize": {
            "protocolVersion": PROTOCOL_VERSION,
            "serverInfo": {"name": "agent_cli-mcp", "version": release.sha},
            "capabilities": {"tools": {}},
        },
        "ping": {},
        # Tools run in the profile's microVM sandbox, not here; this demo lists none.
        "tools/list": {"tools": []},
    }

    def handler(request: Request) -> Response:
        try:
            message = request.json()
        except ValueError:
            return rpc_error(None, PARSE_ERROR, "body is not JSON")
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return rpc_error(None, INVALID_REQUEST, "not a JSON-RPC 2.0 request")
        ident, method = message.get("id"), message.get("method")
        if method not in results:
            return rpc_error(ident, METHOD_NOT_FOUND, f"unknown method {method!r}")
        return Response(200, {"jsonrpc": "2.0", "id": ident, "result": results[method]})

    return handler


def mcp_routes(settings: Settings, release: Release) -> Router:
    router = Router()
    add_health(router, settings, release)
    router.add("POST", "/mcp", mcp(release))
    return router


if __name__ == "__main__":
    raise SystemExit(gateway.run(mcp_routes, replace=True))
