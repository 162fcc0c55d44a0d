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
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from agentgw import __version__
from agentgw.config.load import Config
from agentgw.errors import AgentgwError
from agentgw.fsio import iso
from agentgw.model.fields import want_profile_name
from agentgw.model.host import HostConfig
from agentgw.model.status import ProfileList, ProfileStatus
from agentgw.observe.counts import read_counts
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
    Health,
    ReleaseEntry,
    ReleaseList,
    SandboxReport,
)
from agentgw.registry.gate import COMMON_HEADERS, JSON, Gate, error_response
from agentgw.registry.metrics import CONTENT_TYPE, render_metrics
from agentgw.registry.openapi import openapi_document
from agentgw.registry.page import render_page
from agentgw.registry.reads import read_proof, read_releases, read_sandbox
from agentgw.registry.redact import redact_proof

if TYPE_CHECKING:
    from agentgw.bus.watch import UnitWatch

# The page has no scripts and no external assets; the browser is told so too.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

# A revalidated snapshot is reused this long at most: only time-derived fields can be older.
FRESH_S = 1.0

ConfigLoader = Callable[[], Config]
InputsReader = Callable[[Config], object]
SnapshotProvider = Callable[[Config], Sequence[ProfileStatus]]


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
        raise Refused(404, f"no profile named {profile!r}", hint="GET /v1/profiles lists them")


@dataclass(frozen=True)
class Options:
    """How the app is wired to the host: the bearer token, the snapshot TTL, the accounts
    database, the clocks (tests pass fakes), and the unit watch with the inputs reader that
    revalidation needs (see :func:`create_app`)."""

    token: bytes | None = None
    ttl: float = 1.0
    accounts: Accounts | None = None
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], float] = time.time
    watch: UnitWatch | None = None
    inputs: InputsReader | None = None


class Registry:
    """The route handlers, over a snapshot cache."""

    def __init__(
        self,
        layout: Layout,
        config_loader: ConfigLoader,
        snapshot_provider: SnapshotProvider,
        options: Options,
    ) -> None:
        self.layout = layout
        self.watch = options.watch
        self._inputs = options.inputs
        self._config_loader = config_loader
        self._provider = snapshot_provider
        self._token = options.token
        self._accounts = options.accounts if options.accounts is not None else SystemAccounts()
        self._now = options.now
        self.snapshots = TTLCache(self._take, options.ttl, clock=options.clock)
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
        # Not memoised per snapshot: the counters follow their files (cached by identity).
        counts = read_counts(self.layout.history, self.layout.sandbox_execs)
        body = render_metrics(snap.visible(caller), counts.only(caller.profiles))
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
    options: Options | None = None,
) -> Starlette:
    """The registry app. ``snapshot_provider(config)`` gives the statuses (collect_status).

    With a ``watch`` (open) and ``inputs`` in ``options``, ``Cache-Control: no-cache`` requests
    are answered from a revalidated snapshot; the watch's socket is read whenever it is readable.
    """
    registry = Registry(layout, config_loader, snapshot_provider, options or Options())
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
    app = Starlette(
        routes=routes,
        lifespan=_watching(registry),
        middleware=[Middleware(Gate)],
        exception_handlers={HTTPException: _on_http_error, AgentgwError: _on_agentgw_error},
    )
    app.state.registry = registry
    return app


def _watching(registry: Registry) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The app's lifespan: read the unit watch's socket whenever it is readable."""

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

    return lifespan


def routes_of(app: Starlette) -> list[str]:
    """The paths the app serves (for the test that the OpenAPI document covers every one)."""
    return [route.path for route in app.routes if isinstance(route, Route)]

