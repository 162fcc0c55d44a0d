"""bus/ against systemctl, in a lab, on 100 instances of a trivial template (same run).

- status read: one connection, one ListUnitsByPatterns and plain property reads for all 100
  (``Systemd.service_statuses``) against a shell loop of
  ``systemctl show -p ActiveState -p MainPID`` over the same units. Goal (issue 5): >= 8x.
- restart of one instance, waited for through JobRemoved, against ``systemctl restart``.

From the host this boots a lab and runs itself inside it with ``--inside``; inside a lab it
measures directly. Runnable alone: ``python benchmarks/bench_bus.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from agentgw import log
from agentgw.bus import Systemd
from agentgw.lab.machine import booted
from agentgw.lab.spec import IN_LAB_ENV, LabSpec
from benchmarks.rows import Row, rows_from_json, rows_to_json

REPO = Path(__file__).resolve().parents[1]
UNITS = 100
TEMPLATE = "bench-bus@.service"
PATTERN = "bench-bus@*.service"
STATUS_GOAL = 8.0


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure() -> list[Row]:
    """Inside a lab: set up the template and its instances, measure, clean up."""
    unit_file = Path("/etc/systemd/system") / TEMPLATE
    # No start rate limit: the restart figure restarts one instance 20 times in a row.
    unit_file.write_text(
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sleep infinity\n"
    )
    names = [f"bench-bus@{i}.service" for i in range(UNITS)]
    with Systemd() as sd:
        sd.daemon_reload()
        try:
            if {sd.start(n) for n in names} != {"done"}:
                raise RuntimeError("not every instance started")
            return _rows(sd, names)
        finally:
            for n in names:
                sd.stop(n)
            unit_file.unlink()
            sd.daemon_reload()


def _rows(sd: Systemd, names: list[str]) -> list[Row]:
    def bus_status() -> None:
        with Systemd() as fresh:
            statuses = fresh.service_statuses([PATTERN])
        if len(statuses) != UNITS or any(s.main_pid <= 0 for s in statuses):
            raise RuntimeError(f"bus read {len(statuses)} units, expected {UNITS} running")

    loop = 'for u in "$@"; do systemctl show -p ActiveState -p MainPID "$u"; done'

    def shell_status() -> None:
        out = subprocess.run(
            ["bash", "-c", loop, "bash", *names], check=True, capture_output=True, text=True
        ).stdout
        if out.count("ActiveState=active") != UNITS:
            raise RuntimeError("systemctl loop did not see every unit active")

    bus_ms = _median_ms(_timed(bus_status, 7))
    shell_ms = _median_ms(_timed(shell_status, 3))

    one = names[0]
    bus_restart = _median_ms(_timed(lambda: sd.restart(one), 10))
    ctl_restart = _median_ms(
        _timed(lambda: subprocess.run(["systemctl", "restart", one], check=True), 10)
    )
    return [
        Row(
            name=f"status of {UNITS} units: bus/ list + properties vs systemctl show loop",
            value=bus_ms,
            unit="ms",
            baseline=shell_ms,
            ratio=shell_ms / bus_ms,
            goal=f">= {STATUS_GOAL:g}x",
            ok=shell_ms / bus_ms >= STATUS_GOAL,
        ),
        Row(
            name="restart one unit, waited via JobRemoved vs systemctl restart",
            value=bus_restart,
            unit="ms",
            baseline=ctl_restart,
            ratio=ctl_restart / bus_restart,
            goal="",
            ok=None,
        ),
    ]


def run() -> list[Row]:
    if os.environ.get(IN_LAB_ENV) == "1":
        return measure()
    spec = LabSpec(name=f"bench-bus-{uuid.uuid4().hex[:8]}", binds=(REPO,))
    with booted(spec) as lab:
        result = lab.exec([sys.executable, "-m", "benchmarks.bench_bus", "--inside"], cwd=REPO)
    rows = rows_from_json(result.stdout.splitlines()[-1])
    return rows


if __name__ == "__main__":
    log.configure()
    if sys.argv[1:] == ["--inside"]:
        print(rows_to_json(measure()))
    else:
        for row in run():
            print(row)
