"""One gateway process from start to exit: settings, pidfile claim, listen, ready, drain."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from agent_cli import faults, pidfile
from agent_cli.notify import notify
from agent_cli.server import GatewayServer, Router, serve
from agent_cli.settings import EX_CONFIG, ConfigError, Release, Settings, this_release

# How long past its drain time a replaced instance may take to exit.
REPLACE_MARGIN_S = 5.0

Routes = Callable[[Settings, Release], Router]
# AGENT_NOTIFY_FROM=child: READY=1 comes from a forked child, as runtimes that notify from a
# worker do (systemd refuses it under NotifyAccess=main; readiness: notify sets all).
NOTIFY_FROM = "AGENT_NOTIFY_FROM"


def notify_from_child(message: str) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            notify(message)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def log(message: str) -> None:
    print(f"agent_cli: {message}", file=sys.stderr, flush=True)


def run(routes: Routes, *, replace: bool) -> int:
    """Serve the profile named by the environment until SIGTERM; the process exit code."""
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        log(f"error: {exc}")
        return EX_CONFIG
    release = this_release()
    if release.variant == "crash":
        log(f"crash variant of {release.sha}: exiting 1 at start")
        return 1
    try:
        pidfile.claim(
            settings.home,
            settings.profile,
            replace=replace,
            timeout_s=settings.drain_s + REPLACE_MARGIN_S,
        )
    except pidfile.Refused as exc:
        log(f"error: {exc}")
        return 1
    address = f"{settings.host}:{settings.port}"
    router = routes(settings, release)
    fault: faults.Fault | None = None
    if faults.want_fault(release.variant):
        fault = faults.Fault(release.variant, settings.home, log)
        router = faults.HealthWatch(router, {"/health", settings.health_path}, fault)
    try:
        server = GatewayServer((settings.host, settings.port), router)
    except OSError as exc:
        log(f"error: cannot listen on {address}: {exc.strerror}")
        return 1
    owner = pidfile.me(settings.home, settings.profile)
    try:
        pidfile.write(settings.home, owner)
    except OSError as exc:
        server.server_close()
        log(f"error: AGENT_HOME: cannot write {pidfile.PIDFILE}: {exc.strerror}")
        return EX_CONFIG
    status = f"profile={settings.profile} sha={release.sha} variant={release.variant} on {address}"
    log(f"serving {status}")

    def on_ready() -> None:
        ready = f"READY=1\nSTATUS=serving {status}"
        if os.environ.get(NOTIFY_FROM) == "child":
            notify_from_child(ready)
        else:
            notify(ready)
        if fault is not None:
            fault.ready()

    try:
        serve(
            server,
            drain_s=settings.drain_s,
            on_ready=on_ready,
            on_stopping=lambda: notify("STOPPING=1"),
        )
    finally:
        pidfile.remove_if_mine(settings.home, owner)
    log("stopped")
    return 0
