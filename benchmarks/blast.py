"""Part 1 of the soak: one fault at a time in profile A, while profile B is measured.

B's /health is sampled from here (source-bound to B's own address, as its unit's IP filter
requires), and ``agentgw status --json`` and the registry's /v1/profiles are asked throughout, in
a baseline window before, a window while the fault runs, and a baseline window after A is
restored. Each check reads where the
limit acts (the unit's cgroup files, /proc/<pid>/limits, the journal); a limit systemd accepted
but this kernel does not enforce is reported "not enforced", never counted as containment.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agentgw.lab.host import AGENTGW, OPT, agentgw
from agentgw.paths import journald_unit, log_namespace
from agentgw.registry.client import get
from benchmarks.soak_host import (
    A_LIMITS,
    A_LOGS,
    A_STOP_TIMEOUT_S,
    MIB,
    REGISTRY_SOCKET,
    REPO,
    A,
    B,
    Host,
    a_status,
    cgroup_dir,
    cgroup_limits,
    cpu_seconds,
    journal,
    oom_kills,
    other_cpus,
    pid_and_start,
    read_text,
    rlimit,
    sh,
    show,
    unit,
    unit_limits,
    wait_for,
)

# The test command's version: quick, contained by limits this lab enforces, and light on CPU
# (with no cpu controller here, a fault that burns CPU, its own or journald's, moves B's p99).
SHORT_FAULTS = ("crashloop", "forkbomb", "fillhome", "ignoreterm")
JOURNALD = "systemd-journald.service"
MAX_RATIO = 2.0
SAMPLE_S = 0.005
STATUS_EVERY_S = 1.0
SETTLE_S = 1.5


def p99_ms(latencies: list[float], failures: int) -> float:
    # A failed GET counts as a latency no baseline can match.
    values = latencies + [float("inf")] * failures
    if len(values) < 2:
        return float("inf")
    return statistics.quantiles(values, n=100, method="inclusive")[98] * 1000


def ask_registry() -> str | None:
    """GET /v1/profiles from the registry's socket (as root: every profile); None when it
    answered 200 with the profiles, else what went wrong."""
    body = get(Path(REGISTRY_SOCKET), "/v1/profiles", timeout=10.0)
    if body is None:
        return "registry: no complete 200 answer"
    try:
        json.loads(body)["profiles"]
    except (ValueError, KeyError, TypeError):
        return "registry: no profiles in its answer"
    return None


@dataclass
class Window:
    """What B's /health, ``agentgw status`` and the registry did during one window."""

    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    status_s: list[float] = field(default_factory=list)
    registry_s: list[float] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)

    @property
    def p99_ms(self) -> float:
        return p99_ms(self.latencies, self.failures)


@contextmanager
def measured(host: Host) -> Iterator[Window]:
    """For as long as the block runs: GET B's /health every SAMPLE_S (benchmarks/sampler.py, a
    process of its own); every STATUS_EVERY_S, run ``agentgw status --json`` and ask the
    registry (the same load in every window)."""
    window = Window()
    stop = threading.Event()
    address, port = host.listen[B]

    def readers() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            proc = subprocess.run([AGENTGW, "status", "--json"], capture_output=True, text=True,
                                  timeout=30)
            window.status_s.append(time.perf_counter() - t0)
            try:
                json.loads(proc.stdout)["profiles"]
            except (ValueError, KeyError, TypeError):
                window.bad.append(f"status exit {proc.returncode}: {proc.stderr.strip()[:200]}")
            t0 = time.perf_counter()
            problem = ask_registry()
            window.registry_s.append(time.perf_counter() - t0)
            if problem is not None:
                window.bad.append(problem)
            stop.wait(STATUS_EVERY_S)

    # B's clients are not on A's CPU (they are remote, or other profiles, which the soak keeps
    # off it): nor is the sampler, or it would time its own wake-ups behind A's hog.
    pin = ",".join(map(str, other_cpus()))
    sampler = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sampler", address, str(port), host.health[B],
         str(SAMPLE_S), pin],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert sampler.stdout is not None
    reader = threading.Thread(target=readers)
    try:
        if sampler.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the sampler did not start (exit {sampler.wait()})")
        reader.start()
        yield window
    finally:
        stop.set()
        if reader.is_alive():
            reader.join()
        sampler.terminate()
        out, _ = sampler.communicate(timeout=30)
    sampled = json.loads(out)
    window.latencies, window.failures = sampled["latencies"], sampled["failures"]


def measure(host: Host, seconds: float) -> Window:
    with measured(host) as window:
        time.sleep(seconds)
    return window


# --- the faults -------------------------------------------------------------------------------


@dataclass
class Contained:
    """How a fault was held: the mechanisms that acted, those not enforced here, evidence."""

    mechanism: str
    held: bool
    evidence: str
    not_enforced: list[str] = field(default_factory=list)
    # Whether the CPU that B competes with is A's own (so CPUQuota= is what protects B).
    a_cpu: bool = True


@dataclass
class Seen:
    """What a check reads besides the host: the fault's start, A's pid, the window's figures."""

    since: float
    pid: int
    cgroup: dict[str, str | None]
    window_s: float
    cpu_used: float = 0.0
    journald_cpu: float = 0.0
    shared_journald_cpu: float = 0.0
    journald_limits: dict[str, str | None] = field(default_factory=dict)
    stop_s: float = 0.0


def cpu_quota(cgroup: dict[str, str | None], percent: str | None = None) -> tuple[float, bool]:
    """A CPUQuota (``percent``, default A's) in CPUs, and whether the cgroup whose limits are
    ``cgroup`` enforces it here (cpu.max)."""
    quota = int((percent or A_LIMITS["cpu_quota"]).rstrip("%")) / 100
    value, _, period = (cgroup.get("cpu.max") or "").partition(" ")
    enforced = value.isdigit() and period.isdigit() and int(value) == round(quota * int(period))
    return quota, enforced


def check_crashloop(seen: Seen) -> Contained:
    props = show(unit(A), "ActiveState", "NRestarts")
    hit = journal(A, seen.since, r"Start request repeated too quickly")
    return Contained(
        "Restart=on-failure, StartLimitBurst=5/60s",
        props["ActiveState"] == "failed" and bool(hit),
        f"{props['ActiveState']} after {props['NRestarts']} restarts"
        + ("; start limit hit" if hit else "; start limit not hit"),
    )


def check_forkbomb(seen: Seen) -> Contained:
    limit = A_LIMITS["tasks_max"]
    tasks = len((read_text(cgroup_dir(unit(A)) / "cgroup.threads") or "").split())
    nproc = rlimit(seen.pid, "Max processes")
    refused = journal(A, seen.since, r"fault forkbomb: fork refused")
    tasks_max = seen.cgroup.get("pids.max") == str(limit)
    return Contained(
        f"LimitNPROC={nproc}" + (f", TasksMax={limit}" if tasks_max else ""),
        nproc == str(limit) and bool(refused) and tasks <= limit,
        f"{tasks} tasks (limit {limit}); "
        + (refused[-1].split(": ", 1)[-1] if refused else "no refusal logged"),
        [] if tasks_max else [f"TasksMax={limit}"],
    )


def check_memhog(seen: Seen) -> Contained:
    cap = int(A_LIMITS["data_max"].rstrip("M"))
    refused = journal(A, seen.since, r"fault memhog: allocation refused at \d+ MiB")
    sizes = [int(m.group(1)) for line in refused if (m := re.search(r"at (\d+) MiB", line))]
    # The cgroup's OOM count is gone with the cgroup once A failed; systemd's record of the
    # SIGKILL stays (nothing else here sends A a SIGKILL while it allocates).
    oom_killed = oom_kills(unit(A)) > 0 or bool(
        journal(A, seen.since, r"(killed by the OOM killer|code=killed, status=9/KILL)"))
    props = show(unit(A), "ActiveState", "NRestarts")
    memory_max = seen.cgroup.get("memory.max") == str(int(A_LIMITS["memory_max"][:-1]) * MIB)
    stopped = (bool(sizes) and max(sizes) <= cap) or oom_killed
    return Contained(
        f"LimitDATA={A_LIMITS['data_max']}"
        + (f", MemoryMax={A_LIMITS['memory_max']}" if memory_max else "")
        + ", StartLimitBurst",
        stopped and props["ActiveState"] == "failed",
        f"refused at {max(sizes) if sizes else '?'} MiB x{len(sizes)}"
        + (", OOM-killed" if oom_killed else "")
        + f"; {props['ActiveState']} after {props['NRestarts']} restarts",
        [] if memory_max else [f"MemoryMax={A_LIMITS['memory_max']}"],
    )


def allowed_cpus(pid: int) -> str | None:
    """A live process's CPU affinity as the kernel holds it (e.g. "1" or "0-1")."""
    for line in (read_text(Path(f"/proc/{pid}/status")) or "").splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return None


def a_pinning(pid: int) -> tuple[str | None, str | None]:
    """A's CPUs as the soak pins them (None: not pinned), and ``pid``'s affinity as the kernel
    holds it (equal when the pin acts)."""
    cpus = A_LIMITS.get("cpus")
    return (",".join(map(str, cpus)) if cpus else None), (allowed_cpus(pid) if pid else None)


def check_cpuhog(seen: Seen) -> Contained:
    quota, enforced = cpu_quota(seen.cgroup)
    wanted, allowed = a_pinning(seen.pid)
    pinned = wanted is not None and allowed == wanted
    mechanisms = ([f"CPUQuota={A_LIMITS['cpu_quota']}"] if enforced else []) + (
        [f"CPUAffinity={wanted}"] if pinned else [])
    return Contained(
        ", ".join(mechanisms) or "scheduler fair share only",
        enforced and seen.cpu_used <= quota * 1.1 and (wanted is None or pinned),
        f"A used {seen.cpu_used:.2f} CPUs (quota {quota:.2f}) on CPUs "
        f"{allowed or '?'}",
        [] if enforced else [f"CPUQuota={A_LIMITS['cpu_quota']}"],
    )


def check_fillhome(seen: Seen) -> Contained:
    size = (OPT / "gateways" / A / "home" / "fill.bin").stat().st_size
    cap = int(A_LIMITS["file_max"].rstrip("M")) * MIB
    refused = journal(A, seen.since, r"fault fillhome: write refused")
    return Contained(
        f"LimitFSIZE={A_LIMITS['file_max']} (per file)",
        size == cap,
        f"fill.bin {size // MIB} MiB; "
        + (refused[-1].split(": ", 1)[-1] if refused else "refusal not in the journal"),
    )


def check_ignoreterm(seen: Seen) -> Contained:
    timeout = A_STOP_TIMEOUT_S + 5
    props = show(unit(A), "ActiveState", "Result")
    killed = journal(A, seen.since, r"State 'stop-sigterm' timed out")
    return Contained(
        f"TimeoutStopSec={timeout:g} -> SIGKILL",
        timeout - 0.5 <= seen.stop_s <= timeout + 3 and props["Result"] == "timeout"
        and bool(killed),
        f"stop took {seen.stop_s:.1f}s; {props['ActiveState']} ({props['Result']})"
        + ("; stop-sigterm timed out, SIGKILL" if killed else "; no kill logged"),
    )


def journald_bound(span_s: float) -> int:
    """The most lines A's journald keeps from A in ``span_s`` seconds: its RateLimitBurst per
    RateLimitIntervalSec (30 s), times journald's free-space factor (log2(bytes) - 16) / 4,
    taken here over the journal filesystem's whole size. A span can overlap floor(span / 30)
    + 2 of journald's intervals (they start with a unit's first message, not on ours)."""
    burst = A_LOGS["rate_limit_burst"]
    fs = os.statvfs("/var/log/journal")
    factor = max(1.0, ((fs.f_blocks * fs.f_frsize).bit_length() - 1 - 16) / 4)
    return int(burst * factor) * (int(span_s // 30) + 2)


def check_logflood(seen: Seen) -> Contained:
    """A's lines go to A's own journald (LogNamespace=), which reads them on A's CPU within
    its own quota; the journald every other unit logs to never sees them."""
    flood = r"^agent_cli: fault logflood x"

    def kept_lines() -> int:
        return len(journal(A, seen.since, flood))

    # The journald works through its backlog for a moment: what it keeps is counted once the
    # lines are there, not while it still reads them.
    wait_for(lambda: kept_lines() > 0, 20, every=1.0)
    kept = kept_lines()
    bound = journald_bound(time.time() - seen.since)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen.since))
    said = sh("journalctl", f"--namespace={log_namespace(A)}", "--no-pager", "-o", "cat",
              "--since", stamp, check=False)
    suppressed = re.findall(rf"Suppressed (\d+) messages from \S*{re.escape(unit(A))}", said)
    # None kept is containment too when journald says it suppressed them (A flooded again
    # within the interval its earlier flood had used up).
    rate_held = kept <= bound and (kept > 0 or bool(suppressed))
    shared = sh("journalctl", "--no-pager", "-o", "cat", "--since", stamp, "-u", unit(A),
                check=False)
    leaked = sum(1 for line in shared.splitlines() if re.search(flood, line))
    quota, enforced = cpu_quota(seen.journald_limits, A_LOGS["cpu_quota"])
    wanted, allowed = a_pinning(int(show(journald_unit(A), "MainPID")["MainPID"]))
    pinned = wanted is None or allowed == wanted
    mechanisms = [f"LogNamespace={log_namespace(A)}",
                  f"RateLimitBurst={A_LOGS['rate_limit_burst']}/30s"]
    if enforced:
        mechanisms.append(f"journald CPUQuota={A_LOGS['cpu_quota']}")
    if wanted is not None and allowed == wanted:
        mechanisms.append(f"journald CPUAffinity={wanted}")
    return Contained(
        ", ".join(mechanisms),
        rate_held and leaked == 0 and enforced and pinned
        and seen.journald_cpu <= quota * 1.1,
        f"A's journald kept {kept} flood lines (bound {bound}), suppressed "
        f"{sum(int(n) for n in suppressed)}, used {seen.journald_cpu:.2f} CPUs (quota "
        f"{quota:.2f}) on CPUs {allowed or '?'}; flood lines in the shared journal: {leaked}; "
        f"shared journald used {seen.shared_journald_cpu:.2f} CPUs; A used "
        f"{seen.cpu_used:.2f} CPUs",
        [] if enforced else [f"journald CPUQuota={A_LOGS['cpu_quota']}"],
    )


CHECKS: dict[str, Callable[[Seen], Contained]] = {
    "crashloop": check_crashloop,
    "forkbomb": check_forkbomb,
    "memhog": check_memhog,
    "cpuhog": check_cpuhog,
    "fillhome": check_fillhome,
    "ignoreterm": check_ignoreterm,
    "logflood": check_logflood,
}


def act(name: str, seen: Seen) -> None:
    """While the fault runs: what the fault needs to show its containment."""
    if name in ("crashloop", "memhog"):
        wait_for(lambda: show(unit(A), "ActiveState")["ActiveState"] == "failed", 60)
    elif name == "ignoreterm":
        t0 = time.monotonic()
        sh("systemctl", "stop", unit(A), check=False, timeout=60)
        seen.stop_s = time.monotonic() - t0


@dataclass
class Row:
    fault: str
    mechanism: str
    base_p99_ms: float
    fault_p99_ms: float
    sibling_unchanged: bool
    a_status: str
    status_max_ms: float
    registry_max_ms: float
    result: str
    evidence: str

    @property
    def ratio(self) -> float:
        return self.fault_p99_ms / self.base_p99_ms


def judge(contained: Contained, ratio: float, cpu_enforced: bool, problems: list[str]) -> str:
    """pass, FAIL, or "not enforced" when what failed needs a limit this host lacks: A not
    held without one of its limits, or B slowed by A's CPU without A's CPUQuota."""
    if problems:
        return "FAIL: " + "; ".join(problems)
    missing, failed = [], []
    if not contained.held:
        (missing if contained.not_enforced else failed).append("A not held")
    if ratio > MAX_RATIO:
        cpu_missing = contained.a_cpu and not cpu_enforced
        (missing if cpu_missing else failed).append(f"B p99 {ratio:.1f}x")
    if failed:
        return "FAIL: " + ", ".join(failed + missing)
    if missing:
        limits = [] if contained.held else list(contained.not_enforced)
        cpu = f"CPUQuota={A_LIMITS['cpu_quota']}"
        if ratio > MAX_RATIO and cpu not in limits:
            limits.append(cpu)
        return "not enforced: " + ", ".join(limits) + f" ({', '.join(missing)})"
    return "pass"


def run_fault(host: Host, name: str, window_s: float, before: Window) -> tuple[Row, Window]:
    """The fault in A, measured against ``before`` and the baseline taken once A is restored
    (returned, as the next fault's ``before``)."""
    b_before = pid_and_start(B)
    since = time.time() - 1
    promote = agentgw("promote", A, host.shas[name], "--allow-downgrade", "--json", check=False)
    # The limits as applied, read while A surely has a cgroup (a crashing fault's unit may be
    # between restarts, or failed, once it settled).
    limits = cgroup_limits(A)
    time.sleep(SETTLE_S)
    seen = Seen(since, pid_and_start(A)[0], limits, window_s,
                journald_limits=unit_limits(journald_unit(A)))
    journald = journald_unit(A)
    cpu0, t0 = cpu_seconds(unit(A)), time.monotonic()
    journald0, shared0 = cpu_seconds(journald), cpu_seconds(JOURNALD)
    with measured(host) as during:
        act(name, seen)
        # Long enough for a fair p99 whatever the action took.
        time.sleep(max(0.0, window_s - (time.monotonic() - t0)))
    elapsed = time.monotonic() - t0
    seen.cpu_used = (cpu_seconds(unit(A)) - cpu0) / elapsed
    seen.journald_cpu = (cpu_seconds(journald) - journald0) / elapsed
    seen.shared_journald_cpu = (cpu_seconds(JOURNALD) - shared0) / elapsed
    contained = CHECKS[name](seen)
    shown = a_status(since)
    b_after = pid_and_start(B)
    problems = []
    unchanged = b_after == b_before and b_before[0] > 0
    if not unchanged:
        problems.append(f"B pid/start {b_before} -> {b_after}")
    if during.bad or not during.status_s:
        problems.append((during.bad or ["status never answered"])[0])
    if promote.returncode not in (0, 1):
        problems.append(f"promote exited {promote.returncode}: {promote.stderr.strip()}")
    if name == "fillhome":
        # The fault's artefact, not A's data: gone, so the leak check sees the home as before.
        (OPT / "gateways" / A / "home" / "fill.bin").unlink(missing_ok=True)
    back = agentgw("promote", A, host.shas["a"], "--allow-downgrade", "--json", check=False)
    if back.returncode != 0:
        problems.append(f"restoring A exited {back.returncode}: {back.stdout.strip()[-200:]}")
    after = measure(host, window_s)
    base_ms = p99_ms(before.latencies + after.latencies, before.failures + after.failures)
    mechanism = contained.mechanism
    if contained.not_enforced:
        mechanism += " [not enforced here: " + ", ".join(contained.not_enforced) + "]"
    row = Row(
        fault=name,
        mechanism=mechanism,
        base_p99_ms=base_ms,
        fault_p99_ms=during.p99_ms,
        sibling_unchanged=unchanged,
        a_status=shown,
        status_max_ms=max(during.status_s, default=float("inf")) * 1000,
        registry_max_ms=max(during.registry_s, default=float("inf")) * 1000,
        result=judge(contained, during.p99_ms / base_ms, cpu_quota(seen.cgroup)[1], problems),
        evidence=contained.evidence,
    )
    return row, after



def table(rows: list[Row]) -> str:
    header = ["fault", "containment mechanism", "sibling p99 base->fault (ratio)",
              "sibling pid unchanged", "A in status", "status/registry max", "result"]
    cells = [
        [r.fault, r.mechanism, f"{r.base_p99_ms:.1f}->{r.fault_p99_ms:.1f} ms ({r.ratio:.2f}x)",
         "yes" if r.sibling_unchanged else "NO", r.a_status,
         f"{r.status_max_ms:.0f}/{r.registry_max_ms:.0f} ms", r.result]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in cells]
    return "\n".join(lines + ["", "evidence:"] + [f"  {r.fault}: {r.evidence}" for r in rows])


