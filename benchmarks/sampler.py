"""B's client in the soak: GET /health every interval until SIGTERM, then print the latencies.

A process of its own, so nothing else the soak does (``agentgw status``, the registry's JSON)
holds its interpreter lock while a GET is timed: sharing one with the readers, a reader thread
preempted by A's hog stalled the sampler for milliseconds that were then charged to B.

    python -m benchmarks.sampler ADDRESS PORT PATH INTERVAL_S [CPU,CPU...]

Pinned to the CPUs given (B's clients are not on A's CPU: they are remote, or other
profiles, which the soak keeps off it). Prints ``{"latencies": [...], "failures": N}``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import time
from types import FrameType


def get_health(address: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(address, port, timeout=2.0, source_address=(address, 0))
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    address, port, path, interval = argv[0], int(argv[1]), argv[2], float(argv[3])
    if len(argv) > 4 and argv[4]:
        os.sched_setaffinity(0, {int(c) for c in argv[4].split(",")})
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    latencies: list[float] = []
    failures = 0
    # Ready: the caller's window starts once this line is read.
    print("ready", flush=True)
    while not stopping:
        t0 = time.perf_counter()
        ok = get_health(address, port, path)
        elapsed = time.perf_counter() - t0
        if ok:
            latencies.append(elapsed)
        else:
            failures += 1
        if not stopping:
            time.sleep(max(0.0, interval - elapsed))
    json.dump({"latencies": latencies, "failures": failures}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
