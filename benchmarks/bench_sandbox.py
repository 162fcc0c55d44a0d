"""Exec of ``true`` in the microVM sandbox, start to result, beside the cheapest alternatives.

Four ways to run ``true``, 20 runs each, in the same process run: a plain subprocess, bubblewrap
(``--unshare-all``, a namespace sandbox on the host kernel), a cold microVM (boot with the job
in the initramfs) and a warm one (a pool VM already READY; the pool refills between runs and is
waited for, so each run measures a request that finds a VM ready). Rows are labelled with the
backend (KVM or TCG). Goals (issue 8): cold p50 <= 500 ms where KVM works; warm p50 <= 100 ms.

gVisor (issue 16), when runsc is installed. Cold in this process: a fresh sandbox per job
(``gvisor.run_job``: prepared, then the job at once) as root, and rootless as an unprivileged
uid, which is how the job units run runsc. Then the product's path, in a lab (systemd starts the
units): agentgw-job.socket as ``agentgw init`` installs it, measured from the broker's side with
the broker's client code (:mod:`agentgw.sandbox.jobclient`). Cold: the prepare line to a spare
unit (one that has started, a second ago, and waits for it, as the broker keeps
``sandbox.spare_units`` of them), the unit's ready, its memory limit set as the broker sets it
(:mod:`agentgw.sandbox.jobmem`), then the job line, to the answer (what a request that finds no
prepared unit costs: the sandbox's start, the limit's and the job's). The same on a new
connection, with the unit's own start (systemd's set-up and Python's), is shown too, without a
goal: a request meets it only when every spare is taken. Warm: the job line on a connection
whose unit already answered ready and was limited (what the broker's pool serves,
:mod:`agentgw.sandbox.units`), to the answer; the sandbox's teardown comes after the answer,
off the measured path.
Goals: cold p50 <= 250 ms, warm p50 <= 30 ms.

Runnable alone: ``python benchmarks/bench_sandbox.py``; the image comes from
$AGENTGW_SANDBOX_CACHE or the default cache, and is built there if missing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from agentgw.errors import AgentgwError
from agentgw.lab.machine import booted
from agentgw.lab.spec import LabSpec
from agentgw.sandbox import backend, gvisor, image
from agentgw.sandbox.job import JobRequest
from agentgw.sandbox.pool import WarmPool
from agentgw.sandbox.vm import Machine, host_tsc_khz, run_cold
from benchmarks.rows import Row, rows_from_json, rows_to_json

RUNS = 20
MEMORY_MB = 256
COLD_GOAL_MS = 500.0
WARM_GOAL_MS = 100.0
GVISOR_COLD_GOAL_MS = 250.0
GVISOR_WARM_GOAL_MS = 30.0
REPO = Path(__file__).resolve().parents[1]


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile (the 19th of 20)."""
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def timed(fn: Callable[[], object], runs: int = RUNS) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def sandbox_image() -> tuple[image.Image, Path]:
    cache = Path(os.environ.get("AGENTGW_SANDBOX_CACHE") or Path("/") / image.DEFAULT_CACHE)
    try:
        return image.load(cache), cache
    except AgentgwError:
        built, _ = image.build(cache)
        return built, cache


def bwrap() -> list[str]:
    if shutil.which("bwrap") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "bubblewrap"], check=True,
                       capture_output=True)
    return ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"]


def row(name: str, values: list[float], *, baseline: float | None, goal: str = "",
        ok: bool | None = None, stat: str = "p50") -> Row:
    value = statistics.median(values) if stat == "p50" else p95(values)
    return Row(
        name=f"{name} {stat} ({len(values)} runs)",
        value=value,
        unit="ms",
        baseline=baseline,
        ratio=value / baseline if baseline else None,
        goal=goal,
        ok=ok,
    )


ROOTLESS_UID = 0x7A0FFFFF  # a uid of the per-job range, for the rootless cold runs
ROOTLESS = """
import json, sys, time
from agentgw.sandbox import gvisor
from agentgw.sandbox.job import JobRequest
out = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    assert gvisor.run_job(JobRequest(argv=("true",))).exit_code == 0
    out.append((time.perf_counter() - t0) * 1000)
print(json.dumps(out))
"""


def rootless_cold() -> list[float]:
    """gvisor.run_job as an unprivileged uid (runsc --rootless), timed in that process."""
    with tempfile.TemporaryDirectory(prefix="agentgw-bench-rootless-") as tmp:
        os.chown(tmp, ROOTLESS_UID, ROOTLESS_UID)
        proc = subprocess.run(
            ["setpriv", f"--reuid={ROOTLESS_UID}", f"--regid={ROOTLESS_UID}", "--clear-groups",
             sys.executable, "-c", ROOTLESS, str(RUNS)],
            check=True, capture_output=True, text=True,
            env={"PATH": os.environ.get("PATH", ""), "TMPDIR": tmp,
                 "PYTHONPATH": os.pathsep.join(sys.path)})
    return [float(v) for v in json.loads(proc.stdout)]


UNITS_INSIDE = "--units-inside"


def units_inside() -> list[Row]:
    """Inside a lab: agentgw-job.socket as `agentgw init` installs it; cold and warm exec of
    ``true`` through it, from the broker's side with the broker's client code (jobclient)."""
    from agentgw.sandbox import jobclient, jobmem

    agentgw = str(Path(sys.executable).with_name("agentgw"))
    subprocess.run([agentgw, "init"], check=True, capture_output=True)
    subprocess.run(["systemctl", "start", "agentgw-job.socket"], check=True)
    path = jobclient.socket_path()
    request = JobRequest(argv=("true",), memory_mb=MEMORY_MB)
    spec = jobclient.shape_of(request, "gvisor")
    # As the broker does: each unit's MemoryMax= set to the job's once it is ready (a cold job's
    # line waits for that; a prepared unit gets it when prepared, off the warm path).
    limiter = jobmem.Limiter()
    limit = limiter.apply
    try:
        def cold_once() -> None:
            result = jobclient.run_cold(path, request, limit=limit)
            assert result.exit_code == 0 and result.memory is not None
            assert result.memory.max_bytes > 0, result.memory

        jobclient.run_cold(path, request, limit=limit)  # the first unit start loads caches
        cold = timed(cold_once)
        spare: list[float] = []
        for _ in range(RUNS):
            unit = jobclient.Spare(path, "gvisor", limit=limit)
            time.sleep(1.0)  # the unit starts and waits for its prepare line, as the broker's do
            t0 = time.perf_counter()
            result = unit.run(request)
            spare.append((time.perf_counter() - t0) * 1000)
            assert result.exit_code == 0 and result.memory is not None
        warm: list[float] = []
        prepared: list[float] = []
        for _ in range(RUNS):
            unit = jobclient.open_unit(path, spec, limit=limit)
            prepared.append(unit.prepare_s * 1000)
            # The previous unit's teardown and this one's start settle, as for a request that
            # finds a unit the pool prepared a while ago.
            time.sleep(1.0)
            t0 = time.perf_counter()
            assert unit.run(request).exit_code == 0
            warm.append((time.perf_counter() - t0) * 1000)
    finally:
        limiter.close()
        subprocess.run(["systemctl", "stop", "agentgw-job.socket"], check=False)
    label = f"gVisor {gvisor.PLATFORM} job unit"
    cold_goal, warm_goal = f"<= {GVISOR_COLD_GOAL_MS:.0f} ms", f"<= {GVISOR_WARM_GOAL_MS:.0f} ms"
    rows = []
    for name, values, goal, limit in (
        (f"{label} cold in a spare unit (prepare, ready, memory limit, job)", spare, cold_goal,
         GVISOR_COLD_GOAL_MS),
        (f"{label} warm (job to a unit that answered ready)", warm, warm_goal,
         GVISOR_WARM_GOAL_MS),
        (f"{label} cold in a new unit (no spare left: the unit's start too)", cold, "", None),
    ):
        rows.append(row(f"exec true: {name}", values, baseline=None, goal=goal,
                        ok=None if limit is None else statistics.median(values) <= limit))
        rows.append(row(f"exec true: {name}", values, baseline=None, stat="p95"))
    rows.append(row(f"{label}: connect to ready (sandbox prepared)", prepared, baseline=None))
    return rows


def unit_rows(base: float) -> list[Row]:
    """The job-unit rows, measured in a lab (systemd starts the units), against ``base``."""
    spec = LabSpec(name=f"bench-units-{uuid.uuid4().hex[:6]}", binds=(REPO,))
    with booted(spec) as lab:
        out = lab.exec([sys.executable, "-m", "benchmarks.bench_sandbox", UNITS_INSIDE],
                       cwd=REPO, timeout=900)
    rows = rows_from_json(out.stdout.strip().splitlines()[-1])
    return [dataclasses.replace(r, baseline=base, ratio=r.value / base)
            if r.name.startswith("exec true") else r for r in rows]


def gvisor_rows(request: JobRequest, base: float) -> list[Row]:
    """Cold exec of ``true`` under gVisor by the process itself, as root and rootless, then
    cold and warm through agentgw-job.socket (see the module doc)."""
    if gvisor.runsc_path() is None:
        return []

    def cold_once() -> None:
        assert gvisor.run_job(request).exit_code == 0

    cold = timed(cold_once)
    cold_rootless = rootless_cold()
    label = f"gVisor {gvisor.PLATFORM}"
    cold_goal = f"<= {GVISOR_COLD_GOAL_MS:.0f} ms"
    rows = []
    for name, values in ((f"{label} cold (root, in this process)", cold),
                         (f"{label} cold (rootless, in this process)", cold_rootless)):
        rows.append(row(f"exec true: {name}", values, baseline=base, goal=cold_goal,
                        ok=statistics.median(values) <= GVISOR_COLD_GOAL_MS))
        rows.append(row(f"exec true: {name}", values, baseline=base, stat="p95"))
    return rows + unit_rows(base)


def run() -> list[Row]:
    built, cache = sandbox_image()
    detection = backend.detect(built, cache, allow_emulation=True)
    # The microVM rows use KVM where it works, else TCG, whatever backend jobs use.
    accel = "kvm" if detection.backend == "kvm" else "tcg"
    machine = Machine(accel, detection.machine, tsc_khz=host_tsc_khz())
    label = accel.upper()
    request = JobRequest(argv=("true",), memory_mb=MEMORY_MB)

    plain = timed(lambda: subprocess.run(["true"], check=True))
    bw_argv = bwrap()
    bw = timed(lambda: subprocess.run(bw_argv, check=True))

    def cold_once() -> None:
        assert run_cold(machine, built, request).exit_code == 0

    cold = timed(cold_once)

    warm: list[float] = []
    boots: list[float] = []
    with WarmPool(built, machine, size=1, memory_mb=MEMORY_MB) as pool:
        for _ in range(RUNS):
            if not pool.wait_ready(timeout=120):
                raise AgentgwError("the warm pool did not get a VM ready in 120 s")
            stats = pool.stats()
            if stats.last_boot_s is not None:
                boots.append(stats.last_boot_s * 1000)
            t0 = time.perf_counter()
            result = pool.run(request)
            warm.append((time.perf_counter() - t0) * 1000)
            assert result.warm and result.exit_code == 0

    base = statistics.median(plain)
    cold_p50, warm_p50 = statistics.median(cold), statistics.median(warm)
    kvm = accel == "kvm"
    cold_goal = f"<= {COLD_GOAL_MS:.0f} ms (KVM)" + ("" if kvm else "; n/a: no working KVM")
    rows = [
        row("exec true: plain subprocess", plain, baseline=None),
        row("exec true: plain subprocess", plain, baseline=None, stat="p95"),
        row("exec true: bwrap --unshare-all", bw, baseline=base),
        row("exec true: bwrap --unshare-all", bw, baseline=base, stat="p95"),
        row(f"exec true: microVM cold [{label}]", cold, baseline=base, goal=cold_goal,
            ok=cold_p50 <= COLD_GOAL_MS if kvm else None),
        row(f"exec true: microVM cold [{label}]", cold, baseline=base, stat="p95"),
        row(f"exec true: microVM warm [{label}]", warm, baseline=base,
            goal=f"<= {WARM_GOAL_MS:.0f} ms", ok=warm_p50 <= WARM_GOAL_MS),
        row(f"exec true: microVM warm [{label}]", warm, baseline=base, stat="p95"),
    ]
    rows.extend(gvisor_rows(request, base))
    if boots:
        rows.append(row(f"pool VM boot to READY [{label}]", boots, baseline=None))
    rows.append(Row(
        name=f"boot share of a cold exec [{label}] (1 - warm p50 / cold p50)",
        value=100 * (1 - warm_p50 / cold_p50),
        unit="%",
        baseline=None,
        ratio=None,
        goal="",
        ok=None,
    ))
    return rows


if __name__ == "__main__":
    if sys.argv[1:] == [UNITS_INSIDE]:
        print(rows_to_json(units_inside()))
    else:
        for r in run():
            print(r)
