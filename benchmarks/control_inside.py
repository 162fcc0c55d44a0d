"""Runs inside a lab (see bench_control.py): 100 running profiles, then the two comparisons.

Prints one JSON list of rows on the last line of stdout.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.rows import Row, rows_to_json

REPO = Path(__file__).resolve().parents[1]
AGENTGW = "/opt/agentgw/venv/bin/agentgw"
N = 100
# Promote/bare-restart pairs. A restart alone varies by ±100 ms here (the gateway's stop waits
# for its accept loop's 0.1 s poll): with 8 pairs the medians' difference moved by ~80 ms from
# run to run, with 16 by about half that; 24 narrow it further for ~8 s more.
PAIRS = 24
ETC = Path("/etc/agentgw")
OPT = Path("/opt/agent")


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - t0


def healthy(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1, source_address=(host, 0))
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def setup() -> tuple[list[str], str, str]:
    sh(AGENTGW, "init")
    build = Path(tempfile.mkdtemp())
    out = sh(str(REPO / "scripts/build-releases"), "--out", str(build))
    sha = {line.split()[0]: line.split()[1] for line in out.splitlines()}["good"]
    shutil.copytree(build / "good", build / "good2")
    (build / "good2" / "CHANGES").write_text("b\n")
    sh(AGENTGW, "release", "add", str(build / "good"), "--sha", sha, "--label", "a")
    sha_b = hashlib.sha1(f"{sha}-b".encode()).hexdigest()[:12]  # noqa: S324 - a name, not security
    sh(AGENTGW, "release", "add", str(build / "good2"), "--sha", sha_b, "--label", "b")
    names = [f"p{i:03d}" for i in range(N)]
    for i, name in enumerate(names):
        (ETC / "gateways" / f"{name}.yaml").write_text(
            f"mode: cli\nlisten: 127.77.{1 + i // 200}.{1 + i % 200}:8080\n"
            "resources:\n  memory_max: 128M\n  tasks_max: 64\nhealth:\n  timeout_s: 10\n"
        )
    sh(AGENTGW, "apply")
    for name in names:
        link = OPT / "gateways" / name / "current"
        os.symlink(f"../../releases/{sha}-a", link)
    sh(AGENTGW, "apply")  # enables and starts every promoted profile
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        active = sh("systemctl", "list-units", "--no-legend", "--state=active",
                    "agent-gateway@*").count("agent-gateway@")
        if active >= N:
            break
        time.sleep(0.5)
    return names, sha, sha_b


def bare_restart(profile: str, host: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["systemctl", "restart", f"agent-gateway@{profile}.service"], check=True)
    while not healthy(host, 8080):
        time.sleep(0.005)
    return time.perf_counter() - t0


def promote_rows(p: str, sha_a: str, sha_b: str) -> list[Row]:
    """agentgw promote vs systemctl restart + readiness of the same unit, as root runs it:
    through the CLI fork server (agentgw-cli.socket), and (every other pair) in a process of
    its own ($AGENTGW_CLI_FORK=0), which is what the fork server buys."""
    sh("systemctl", "start", "agentgw-cli.socket")
    subprocess.run([AGENTGW, "status"], capture_output=True)  # the server's first start
    host = "127.77.1.1"
    times: dict[str, list[float]] = {"fork": [], "here": [], "bare": []}
    targets = iter([sha_b, sha_a] * PAIRS * 2)
    for i in range(PAIRS):
        times["fork"].append(timed([AGENTGW, "promote", p, next(targets), "--allow-downgrade"]))
        times["bare"].append(bare_restart(p, host))
        if i % 2:
            times["here"].append(timed(["env", "AGENTGW_CLI_FORK=0", AGENTGW, "promote", p,
                                        next(targets), "--allow-downgrade"]))
    fork, here, bare = (statistics.median(times[k]) for k in ("fork", "here", "bare"))
    return [
        Row(name="promote (verify, flip, restart, proofs, health, history)",
            value=round(fork * 1000, 1), unit="ms", baseline=round(bare * 1000, 1),
            ratio=round(fork / bare, 2), goal="<= 300 ms over a bare restart + readiness",
            ok=(fork - bare) <= 0.300),
        Row(name="promote overhead over bare restart + readiness",
            value=round((fork - bare) * 1000, 1), unit="ms", baseline=None, ratio=None,
            goal="<= 300 ms", ok=(fork - bare) <= 0.300),
        Row(name="promote overhead, in a process of its own (AGENTGW_CLI_FORK=0)",
            value=round((here - bare) * 1000, 1), unit="ms", baseline=None, ratio=None,
            goal="(no fork server: for comparison)", ok=None),
    ]


def main() -> None:
    names, sha_a, sha_b = setup()
    units = [f"agent-gateway@{n}.service" for n in names]
    loop = " ".join(units)
    shell = ["bash", "-c", f"for u in {loop}; do systemctl show -p ActiveState -p MainPID $u; done"]
    status = [AGENTGW, "status", "--json"]
    t_shell = statistics.median(timed(shell) for _ in range(5))
    rows = []
    # As on a host: the registry runs, and status gets a snapshot it vouches is current. Then
    # the same with the registry stopped: the command computes every row itself.
    for source in ("registry", "direct"):
        # stopped with its socket: a connection to the socket would start it again
        sh("systemctl", "start" if source == "registry" else "stop", "agentgw-registry.socket",
           "agentgw-registry.service")
        subprocess.run(status, capture_output=True)  # warm the page cache (and the registry)
        doc = json.loads(subprocess.run(status, capture_output=True, text=True).stdout)
        assert doc["source"] == source, doc["source"]
        shown = len(doc["profiles"])
        t_status = statistics.median(timed(status) for _ in range(9))
        rows.append(Row(
            name=f"agentgw status --json, {shown} profiles ({source})",
            value=round(t_status * 1000, 1),
            unit="ms",
            baseline=round(t_shell * 1000, 1),
            ratio=round(t_shell / t_status, 1),
            goal=">= 8x faster than a systemctl show loop" if source == "registry"
            else "(no registry: for comparison)",
            ok=t_shell / t_status >= 8 if source == "registry" else None,
        ))
    rows += promote_rows(names[0], sha_a, sha_b)
    print(rows_to_json(rows))


if __name__ == "__main__":
    sys.exit(main())
