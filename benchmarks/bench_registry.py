"""Registry under load: GET /v1/profiles (100 profiles) against a bare constant endpoint.

Both apps are served the same way, in their own process: uvicorn with the registry's protocol
and settings (``agentgw.registry.serve.run_server``) on a loopback TCP socket. The registry
answers as in production: bearer-token check, snapshot cache (1 s TTL) refreshed by
collect_status over a fabricated host of 100 running, aligned profiles (releases, /proc
environ, launch records, proof records on disk; units from a fake systemd, as this machine has
none). One load generator (asyncio, raw HTTP/1.1 keep-alive, 16 connections) drives each for
10 s after a 1 s warm-up, in the same run.

Goals (issue 7): throughput >= 50% of the bare endpoint; p99 <= 25 ms.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.rows import Row

PROFILES = 100
CONNECTIONS = 16
DURATION_S = 10.0
WARMUP_S = 1.0
HOST = "127.77.0.1"
TOKEN = "bench-token"  # noqa: S105 - a throwaway token for a loopback benchmark
THROUGHPUT_GOAL = 0.5
P99_GOAL_MS = 25.0


def fabricate(root: Path) -> tuple[Any, Callable[[Any], Any], Any]:
    """A host of PROFILES aligned, proven profiles; the config and a status provider over it."""
    from agentgw.bus import ServiceStatus
    from agentgw.config.load import Config
    from agentgw.model import HostConfig, Profile
    from agentgw.observe.status import collect_status
    from agentgw.paths import Layout, unit_name

    layout = Layout(root)
    proc = root / "proc"
    release = layout.release("3f9c2e1d0a4b", "good")
    release.mkdir(parents=True)
    (release / "manifest.json").write_text(json.dumps(
        {"format": 1, "sha": "3f9c2e1d0a4b", "label": "good", "version": 1,
         "created": "2024-01-01T00:00:00Z", "files": []}))
    layout.proofs.mkdir(parents=True)
    names = [f"p{i:03d}" for i in range(PROFILES)]
    started = time.time() - 3600
    units = []
    for i, name in enumerate(names):
        link = layout.current(name)
        link.parent.mkdir(parents=True)
        os.symlink(os.path.relpath(release, link.parent), link)
        pid = 10_000 + i
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "environ").write_bytes(f"PYTHONPATH={link}\0".encode())
        layout.logs(name).mkdir(parents=True)
        (layout.logs(name) / "launch.json").write_text(json.dumps(
            {"profile": name, "pid": pid, "runtime": os.fspath(release),
             "sha": "3f9c2e1d0a4b", "mode": "cli"}))
        (layout.proofs / f"{name}.json").write_text(json.dumps(
            {"profile": name, "time": "2099-01-01T00:00:00Z", "isolated": True,
             "checks": [{"name": "cross-read", "result": "passed", "evidence": "EACCES"}]}))
        units.append(ServiceStatus(
            name=unit_name(name), load_state="loaded", active_state="active",
            sub_state="running", main_pid=pid, started_usec=int(started * 1e6), n_restarts=0,
            memory_bytes=80 << 20, invocation_id="00"))
    config = Config(
        etc=root / "etc",
        host=HostConfig(),
        host_file=None,
        profiles={n: Profile.model_validate(
            {"name": n, "mode": "cli", "listen": f"127.78.{i // 200}.{i % 200 + 2}:8080"})
            for i, n in enumerate(names)},
        profile_files={},
    )

    class Units:
        def service_statuses(self, patterns: list[str]) -> list[ServiceStatus]:
            return units

    return config, lambda c: collect_status(layout, c, Units(), proc=proc), layout


def serve(kind: str, report: Connection) -> None:
    """Child process: build the app, listen on HOST:0, report the port, serve until killed."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from agentgw.registry.app import Options, create_app
    from agentgw.registry.serve import run_server, tcp_listener

    with tempfile.TemporaryDirectory() as tmp:
        if kind == "registry":
            config, provider, layout = fabricate(Path(tmp))
            assert len(provider(config)) == PROFILES
            app: Any = create_app(layout, lambda: config, provider, Options(token=TOKEN.encode()))
        else:
            async def constant(request: Request) -> Response:
                return Response(b'{"status":"ok"}', media_type="application/json")

            app = Starlette(routes=[Route("/v1/profiles", constant)])
        sock = tcp_listener(HOST, 0)
        report.send(sock.getsockname()[1])
        run_server(app, [sock])


async def _client(port: int, stop: float, latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    request = (f"GET /v1/profiles HTTP/1.1\r\nHost: registry\r\n"
               f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()
    try:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n")[0].decode())
    finally:
        writer.close()


async def _load(port: int, seconds: float) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds
    await asyncio.gather(*(_client(port, stop, latencies, errors) for _ in range(CONNECTIONS)))
    return latencies, errors


def measure(port: int) -> dict[str, float]:
    asyncio.run(_load(port, WARMUP_S))
    latencies, errors = asyncio.run(_load(port, DURATION_S))
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / DURATION_S, "p50_ms": cuts[49] * 1e3, "p99_ms": cuts[98] * 1e3}


def run() -> list[Row]:
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, dict[str, float]] = {}
    for kind in ("bare", "registry"):
        parent, child = ctx.Pipe()
        server = ctx.Process(target=serve, args=(kind, child), daemon=True)
        server.start()
        try:
            if not parent.poll(60):
                raise RuntimeError(f"the {kind} server did not start")
            results[kind] = measure(parent.recv())
        finally:
            server.terminate()
            server.join(10)
    reg, bare = results["registry"], results["bare"]
    ratio = reg["rps"] / bare["rps"]
    return [
        Row(
            name=f"registry GET /v1/profiles ({PROFILES} profiles), {CONNECTIONS} conns",
            value=reg["rps"],
            unit="req/s",
            baseline=bare["rps"],
            ratio=ratio,
            goal=f">= {THROUGHPUT_GOAL:.0%} of bare",
            ok=ratio >= THROUGHPUT_GOAL,
        ),
        Row(
            name="registry GET /v1/profiles p99 latency",
            value=reg["p99_ms"],
            unit="ms",
            baseline=bare["p99_ms"],
            ratio=reg["p99_ms"] / bare["p99_ms"],
            goal=f"<= {P99_GOAL_MS:g} ms",
            ok=reg["p99_ms"] <= P99_GOAL_MS,
        ),
        Row(
            name="registry GET /v1/profiles p50 latency",
            value=reg["p50_ms"],
            unit="ms",
            baseline=bare["p50_ms"],
            ratio=reg["p50_ms"] / bare["p50_ms"],
            goal="",
            ok=None,
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
