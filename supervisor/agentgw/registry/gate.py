"""The first check of every request, and the JSON error every answer uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentgw.registry.documents import (
    ErrorBody,
)

if TYPE_CHECKING:
    pass



JSON = "application/json"


READ_METHODS = ("GET", "HEAD")


# Request headers beyond this are refused (431): nothing the registry reads needs more.
HEADER_LIMIT = 16 * 1024


COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def error_response(
    status: int, message: str, hint: str = "", headers: dict[str, str] | None = None
) -> Response:
    body = ErrorBody(error=message, hint=hint, status=status).model_dump_json()
    return Response(body, status, headers={**COMMON_HEADERS, **(headers or {})}, media_type=JSON)


class Gate:
    """The first check of every request: headers of at most 16 KiB (431), GET and HEAD only
    (405), a UTF-8 query (400).

    starlette decodes the query string as UTF-8 when it builds a URL (e.g. for a trailing-slash
    redirect) and would fail with a 500 otherwise. HEAD answers carry the GET headers and no
    body, whatever server runs the app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
        if size > HEADER_LIMIT:
            response = error_response(
                431,
                f"the request's headers are {size} bytes, more than the {HEADER_LIMIT} allowed",
                hint="send fewer or shorter headers",
            )
            await response(scope, receive, send)
            return
        if scope["method"] not in READ_METHODS:
            response = error_response(
                405,
                f"{scope['method']} is not allowed: the registry is read-only",
                hint="use GET or HEAD",
                headers={"Allow": ", ".join(READ_METHODS)},
            )
            await response(scope, receive, send)
            return
        try:
            scope.get("query_string", b"").decode()
        except UnicodeDecodeError:
            await error_response(400, "the query string is not UTF-8")(scope, receive, send)
            return
        if scope["method"] == "HEAD":

            async def headers_only(message: Message) -> None:
                if message["type"] == "http.response.body":
                    message = {**message, "body": b""}
                await send(message)

            await self.app(scope, receive, headers_only)
            return
        await self.app(scope, receive, send)
