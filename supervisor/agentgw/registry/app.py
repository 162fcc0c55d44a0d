"""The registry's starlette app: read-only routes over one cached snapshot of the host.

Every request is answered from a :class:`Snapshot` (config, profile statuses, releases,
sandbox) that is at most ``ttl`` seconds old; rendered bodies are memoised per snapshot and per
caller visibility, so a busy ``/v1/profiles`` costs neither D-Bus calls nor re-serialisation.

A request with ``Cache-Control: no-cache`` (``agentgw status`` sends it) is answered from a
snapshot only if that snapshot is provably current: no gateway unit changed since it was taken
(systemd's signals, counted by :class:`agentgw.bus.watch.UnitWatch`), none of the files it was
read from changed (:func:`agentgw.observe.status.status_inputs`), and it is younger than
``FRESH_S`` (uptimes and proof ages move with the clock). Otherwise a new one is taken first.
Only GET and HEAD exist: :class:`Gate` answers every other method 405 before routing.
Errors are JSON: ``{"error", "hint", "status"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentgw import __version__
from agentgw.config.load import Config
from agentgw.errors import AgentgwError
from agentgw.fsio import iso
from agentgw.model.host import HostConfig
from agentgw.model.profile import want_profile_name
from agentgw.model.status import ProfileList, ProfileStatus
from agentgw.paths import Layout
from agentgw.registry.auth import (
    Accounts,
    Caller,
    Refused,
    SystemAccounts,
    authorize,
    connection_in,
)
from agentgw.registry.cache import TTLCache
from agentgw.registry.documents import (
    ErrorBody,
    Health,
    ReleaseEntry,
    ReleaseList,
    SandboxReport,
)
from agentgw.registry.metrics import CONTENT_TYPE, render_metrics
from agentgw.registry.openapi import openapi_document
from agentgw.registry.page import render_page
from agentgw.registry.reads import read_proof, read_releases, read_sandbox

if TYPE_CHECKING:
    from agentgw.bus.watch import UnitWatch

JSON = "application/json"
READ_METHODS = ("GET", "HEAD")
# Request headers beyond this are refused (431): nothing the registry reads needs more.
HEADER_LIMIT = 16 * 1024
COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# The page has no scripts and no external assets; the browser is told so too.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

# A revalidated snapshot is reused this long at most: only time-derived fields can be older.
FRESH_S = 1.0

ConfigLoader = Callable[[], Config]
InputsReader = Callable[[Config], object]
SnapshotProvider = Callable[[Config], Sequence[ProfileStatus]]


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


@dataclass
class Snapshot:
    """Everything the routes answer from, taken at one time."""

    config: Config
    statuses: tuple[ProfileStatus, ...]
    releases: tuple[ReleaseEntry, ...] | Refused
    sandbox: SandboxReport
    taken: float
    # What the snapshot was read at: (unit watch generation, status_inputs); None: unknown.
    stamp: object = None
    memo: dict[tuple[str, frozenset[str] | None], bytes] = field(default_factory=dict)

    def visible(self, caller: Caller) -> tuple[ProfileStatus, ...]:
        return tuple(s for s in self.statuses if caller.sees(s.profile))

    def find(self, caller: Caller, profile: str) -> ProfileStatus:
        """The profile's status, or 404 alike for unknown and for not visible to the caller."""
        if want_profile_name(profile) and caller.sees(profile):
            for status in self.statuses:
                if status.profile == profile:
                    return status
        raise Refused(404, f"no profile {profile!r}", hint="GET /v1/profiles lists them")


class Registry:
    """The route handlers, over a snapshot cache."""

    def __init__(
        self,
        layout: Layout,
        config_loader: ConfigLoader,
        snapshot_provider: SnapshotProvider,
        *,
        token: bytes | None,
        ttl: float,
        accounts: Accounts,
        clock: Callable[[], float],
        now: Callable[[], float],
        watch: UnitWatch | None = None,
        inputs: InputsReader | None = None,
    ) -> None:
        self.layout = layout
        self.watch = watch
        self._inputs = inputs
        self._clock = clock
        self._config_loader = config_loader
        self._provider = snapshot_provider
        self._token = token
        self._accounts = accounts
        self._now = now
        self.snapshots = TTLCache(self._take, ttl, clock=clock)
        self._openapi = json.dumps(openapi_document()).encode()

    def _stamp(self, config: Config) -> object:
        """Where the host stands now, as far as a snapshot can tell; None when it cannot."""
        if self.watch is None or self._inputs is None:
            return None
        return (self.watch.generation, self._inputs(config))

    def _take(self) -> Snapshot:
        config = self._config_loader()
        # Before reading: a change while reading makes the next comparison fail, never pass.
        stamp = self._stamp(config)
        taken = self._now()
        statuses = tuple(self._provider(config))
        releases: tuple[ReleaseEntry, ...] | Refused
        try:
            releases = tuple(read_releases(self.layout, config.profiles))
        except Refused as exc:
            releases = exc
        return Snapshot(
            config=config,
            statuses=statuses,
            releases=releases,
            sandbox=read_sandbox(self.layout, taken),
            taken=taken,
            stamp=stamp,
        )

    def poll_watch(self) -> None:
        """Count the unit signals received so far; a broken watch is dropped (every
        revalidation then takes a new snapshot)."""
        if self.watch is None:
            return
        try:
            self.watch.poll()
        except AgentgwError:
            watch, self.watch = self.watch, None
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(watch.fileno())
            watch.close()

    async def revalidated(self) -> Snapshot:
        """The held snapshot if it is provably current (see the module doc), else a new one."""
        self.poll_watch()
        held = self.snapshots.peek()
        if held is not None:
            snap, age = held
            if age < FRESH_S and snap.stamp is not None and snap.stamp == self._stamp(snap.config):
                return snap
        return await self.snapshots.reload()

    async def _context(self, request: Request) -> tuple[Snapshot, Caller]:
        fresh = "no-cache" in request.headers.get("cache-control", "").lower()
        held = self.snapshots.peek()
        if held is not None:
            # Authorise first, against the configuration already held: a caller that may not
            # read the registry costs no snapshot and learns nothing from one.
            self._authorize(request, held[0].config)
        try:
            snap = await (self.revalidated() if fresh else self.snapshots.get())
        except (Refused, AgentgwError):
            self._check_privileged(request)
            raise
        return snap, self._authorize(request, snap.config)

    def _authorize(self, request: Request, config: Config) -> Caller:
        return authorize(
            connection_in(request.scope),
            request.headers.get("authorization"),
            host=config.host,
            profiles=config.profiles,
            token=self._token,
            accounts=self._accounts,
        )

    @staticmethod
    def _memo(
        snap: Snapshot, caller: Caller, kind: str, render: Callable[[], bytes | str]
    ) -> bytes:
        key = (kind, caller.profiles)
        body = snap.memo.get(key)
        if body is None:
            rendered = render()
            body = rendered.encode() if isinstance(rendered, str) else rendered
            snap.memo[key] = body
        return body

    def _check_privileged(self, request: Request) -> None:
        """Without a snapshot (the config does not load) only root, the admin group (by the
        default name: agentgw.yaml itself may be what is broken) and the token holder learn
        why: the error quotes the configuration."""
        try:
            caller = authorize(
                connection_in(request.scope),
                request.headers.get("authorization"),
                host=HostConfig(),
                profiles=(),
                token=self._token,
                accounts=self._accounts,
            )
        except Refused:
            caller = None
        if caller is None or caller.profiles is not None:
            raise Refused(
                503,
                "the registry cannot read its configuration",
                hint="root and the admin group see the reason; run 'agentgw config check'",
            )

    # -- routes ---------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        health = Health(version=__version__, unit_watch=self.watch is not None)
        return _json(health.model_dump_json().encode())

    async def openapi(self, request: Request) -> Response:
        return _json(self._openapi)

    async def profiles(self, request: Request) -> Response:
        snap, caller = await self._context(request)

        def render() -> bytes:
            return ProfileList(
                generated_at=iso(snap.taken),
                isolation_mode=snap.config.host.isolation,
                profiles=snap.visible(caller),
                source="registry",
            ).model_dump_json(indent=2).encode()

        return _json(self._memo(snap, caller, "profiles", render))

    async def profile(self, request: Request) -> Response:
        snap, caller = await self._context(request)
        status = snap.find(caller, request.path_params["profile"])
        return _json(status.model_dump_json().encode())

    async def proofs(self, request: Request) -> Response:
        snap, caller = await self._context(request)
        status = snap.find(caller, request.path_params["profile"])
        stored = read_proof(self.layout, status.profile)
        if stored is None:
            raise Refused(
                404,
                f"no proof record for profile {status.profile}",
                hint=f"run 'agentgw verify {status.profile}'",
            )
        if caller.profiles is None:
            return _json(stored)
        return _json(redact_proof(stored))

    async def releases(self, request: Request) -> Response:
        snap, caller = await self._context(request)
        entries = snap.releases
        if isinstance(entries, Refused):
            raise entries

        def render() -> bytes:
            shown = []
            for entry in entries:
                uses = tuple(u for u in entry.used_by if caller.sees(u.profile))
                if caller.profiles is None or uses:
                    shown.append(entry.model_copy(update={"used_by": uses}))
            return ReleaseList(releases=tuple(shown)).model_dump_json().encode()

        return _json(self._memo(snap, caller, "releases", render))

    async def sandbox(self, request: Request) -> Response:
        snap, caller = await self._context(request)
        report = snap.sandbox
        if caller.profiles is not None:
            mine = tuple(e for e in report.recent_execs if caller.sees(str(e.get("profile"))))
            report = report.model_copy(update={"recent_execs": mine})
        return _json(report.model_dump_json().encode())

    async def metrics(self, request: Request) -> Response:
        snap, caller = await self._context(request)
        body = self._memo(snap, caller, "metrics", lambda: render_metrics(snap.visible(caller)))
        return Response(body, headers=COMMON_HEADERS, media_type=CONTENT_TYPE)

    async def page(self, request: Request) -> Response:
        snap, caller = await self._context(request)
        body = self._memo(
            snap,
            caller,
            "page",
            lambda: render_page(
                snap.visible(caller), generated_at=iso(snap.taken), caller=caller.name
            ),
        )
        return HTMLResponse(
            body, headers={**COMMON_HEADERS, "Content-Security-Policy": PAGE_CSP}
        )


def redact_proof(stored: bytes) -> bytes:
    """A profile's own proof record as its gateway's user may see it: every check's name,
    result and how many attempts it made, not the evidence and reasons, which name the
    siblings' paths, addresses and MainPIDs. The signed record is for root and the admin
    group (``agentgw attest verify``)."""
    try:
        record = json.loads(stored)
    except ValueError as exc:
        raise Refused(503, "the proof record is not valid JSON") from exc
    if not isinstance(record, dict):
        raise Refused(503, "the proof record is not a JSON object")
    checks = []
    for check in record.get("checks") or []:
        if not isinstance(check, dict):
            continue
        evidence = check.get("evidence")
        attempts = evidence.get("attempts") if isinstance(evidence, dict) else None
        checks.append({
            "name": check.get("name"),
            "result": check.get("result"),
            "attempts": len(attempts) if isinstance(attempts, list) else None,
        })
    view = {
        "profile": record.get("profile"),
        "time": record.get("time"),
        "isolated": record.get("isolated"),
        "exposure": record.get("exposure"),
        "checks": checks,
        "redacted": "sibling paths, addresses and pids are shown to root and the admin "
        "group only; the signed record is theirs",
    }
    return json.dumps(view, indent=2).encode()


def _json(body: bytes) -> Response:
    return Response(body, headers=COMMON_HEADERS, media_type=JSON)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    message = {404: "no such path", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    hint = "GET /openapi.json lists every route" if exc.status_code == 404 else ""
    return error_response(exc.status_code, message, hint, dict(exc.headers or {}))


async def _on_agentgw_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AgentgwError)  # noqa: S101 - registered for AgentgwError only
    if isinstance(exc, Refused):
        return error_response(exc.status, exc.message, exc.hint, exc.headers)
    # Anything else means the host's config or state could not be read: not the caller's fault.
    return error_response(503, exc.message, exc.hint)


def create_app(
    layout: Layout,
    config_loader: ConfigLoader,
    snapshot_provider: SnapshotProvider,
    *,
    token: bytes | None = None,
    ttl: float = 1.0,
    accounts: Accounts | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], float] = time.time,
    watch: UnitWatch | None = None,
    inputs: InputsReader | None = None,
) -> Starlette:
    """The registry app. ``snapshot_provider(config)`` gives the statuses (collect_status).

    With a ``watch`` (open) and ``inputs``, ``Cache-Control: no-cache`` requests are answered
    from a revalidated snapshot; the watch's socket is read whenever it is readable.
    """
    registry = Registry(
        layout,
        config_loader,
        snapshot_provider,
        token=token,
        ttl=ttl,
        accounts=accounts if accounts is not None else SystemAccounts(),
        clock=clock,
        now=now,
        watch=watch,
        inputs=inputs,
    )
    get = ["GET"]  # starlette adds HEAD to every GET route
    routes = [
        Route("/", registry.page, methods=get),
        Route("/health", registry.health, methods=get),
        Route("/openapi.json", registry.openapi, methods=get),
        Route("/v1/profiles", registry.profiles, methods=get),
        Route("/v1/profiles/{profile}", registry.profile, methods=get),
        Route("/v1/profiles/{profile}/proofs", registry.proofs, methods=get),
        Route("/v1/releases", registry.releases, methods=get),
        Route("/v1/sandbox", registry.sandbox, methods=get),
        Route("/metrics", registry.metrics, methods=get),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        watch = registry.watch
        if watch is None:
            yield
            return
        loop = asyncio.get_running_loop()
        fd = watch.fileno()
        loop.add_reader(fd, registry.poll_watch)
        try:
            yield
        finally:
            loop.remove_reader(fd)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(Gate)],
        exception_handlers={HTTPException: _on_http_error, AgentgwError: _on_agentgw_error},
    )
    app.state.registry = registry
    return app


def routes_of(app: Starlette) -> list[str]:
    """The paths the app serves (for the test that the OpenAPI document covers every one)."""
    return [route.path for route in app.routes if isinstance(route, Route)]

