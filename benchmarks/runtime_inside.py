"""Runs inside a lab (see bench_runtime.py): the promote overhead of a release carrying the big
litellm tree beside a bare `systemctl restart` + readiness. Prints one JSON list of rows on
the last line of stdout."""

from __future__ import annotations

import http.client
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
WHEELS = "/var/cache/agentgw/wheels/bench-runtime"
REQUIREMENTS = str(REPO / "benchmarks" / "runtime-requirements.txt")
PROFILE, HOST, PORT = "big", "127.77.1.1", 8080
RUNS = 6


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def healthy() -> bool:
    conn = http.client.HTTPConnection(HOST, PORT, timeout=1, source_address=(HOST, 0))
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def setup() -> tuple[str, str]:
    sh(AGENTGW, "init")
    build = Path(tempfile.mkdtemp())
    out = sh(str(REPO / "scripts/build-releases"), "--out", str(build))
    sha = {line.split()[0]: line.split()[1] for line in out.splitlines()}["good"]
    shutil.copytree(build / "good", build / "good2")
    (build / "good2" / "CHANGES").write_text("b\n")
    shas = (sha, "b" + sha[1:] if not sha.startswith("b") else "c" + sha[1:])
    for src, (s, label) in zip(("good", "good2"), ((shas[0], "biga"), (shas[1], "bigb")),
                               strict=True):
        sh(AGENTGW, "release", "build", str(build / src), "--sha", s, "--label", label,
           "-r", REQUIREMENTS, "--wheelhouse", WHEELS)
    Path(f"/etc/agentgw/gateways/{PROFILE}.yaml").write_text(
        f"mode: cli\nlisten: {HOST}:{PORT}\nstart_timeout_s: 60\n"
        "resources:\n  memory_max: 512M\n"
    )
    sh(AGENTGW, "apply")
    sh(AGENTGW, "promote", PROFILE, shas[0])
    return shas


def main() -> None:
    a, b = setup()
    promotes, bares = [], []
    for i in range(RUNS):
        t0 = time.perf_counter()
        sh(AGENTGW, "promote", PROFILE, b if i % 2 == 0 else a, "--allow-downgrade")
        promotes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sh("systemctl", "restart", f"agent-gateway@{PROFILE}.service")
        while not healthy():
            time.sleep(0.005)
        bares.append(time.perf_counter() - t0)
    prom, bare = statistics.median(promotes), statistics.median(bares)
    print(rows_to_json([
        Row(
            name="promote of the big release vs bare restart + readiness",
            value=round(prom * 1000, 1),
            unit="ms",
            baseline=round(bare * 1000, 1),
            ratio=round(prom / bare, 2),
            goal="(reported: includes the re-hash)",
            ok=None,
        ),
        Row(
            name="promote overhead for the big release (re-hash, proofs, history)",
            value=round((prom - bare) * 1000, 1),
            unit="ms",
            baseline=None,
            ratio=None,
            goal="(reported)",
            ok=None,
        ),
    ]))


if __name__ == "__main__":
    sys.exit(main())
