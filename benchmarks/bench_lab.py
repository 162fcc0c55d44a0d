"""Lab boot: `Lab.up` to systemd `running`, against mounting the overlay alone (same run).

Goal (issue 2): boot to running <= 5 s.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from agentgw.lab.machine import Lab
from agentgw.lab.spec import LabSpec
from benchmarks.rows import Row

RUNS = 5
GOAL_S = 5.0


def overlay_only() -> float:
    """Mount and unmount the tmpfs + overlay the lab uses, without booting anything."""
    with tempfile.TemporaryDirectory(dir="/run") as d:
        ovl, root = Path(d) / "ovl", Path(d) / "root"
        ovl.mkdir()
        root.mkdir()
        t0 = time.perf_counter()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", ovl], check=True)
        (ovl / "u").mkdir()
        (ovl / "w").mkdir()
        opts = f"lowerdir=/,upperdir={ovl / 'u'},workdir={ovl / 'w'}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, root], check=True)
        elapsed = time.perf_counter() - t0
        subprocess.run(["umount", root], check=True)
        subprocess.run(["umount", ovl], check=True)
    return elapsed


def run() -> list[Row]:
    boots: list[float] = []
    downs: list[float] = []
    for _ in range(RUNS):
        lab = Lab.up(LabSpec(name=f"bench-{uuid.uuid4().hex[:8]}"))
        boots.append(lab.state.boot_seconds)
        t0 = time.perf_counter()
        lab.down()
        downs.append(time.perf_counter() - t0)
    base = statistics.median(overlay_only() for _ in range(RUNS))
    boot = statistics.median(boots)
    return [
        Row(
            name="lab boot to running (median of 5)",
            value=boot,
            unit="s",
            baseline=base,
            ratio=boot / base if base else None,
            goal=f"<= {GOAL_S} s",
            ok=boot <= GOAL_S,
        ),
        Row(
            name="lab down (median of 5)",
            value=statistics.median(downs),
            unit="s",
            baseline=None,
            ratio=None,
            goal="",
            ok=None,
        ),
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
