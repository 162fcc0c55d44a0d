"""The soak's host inside the lab: set-up, and the readers of units, cgroups and the journal.

Profile A (api) gets the faults, with small limits so each fault reaches them within seconds;
profile B (core) is the sibling that must not notice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentgw.bus import SERVICE, UNIT, Systemd
from agentgw.lab.host import ETC, KEY, OPT, PROFILES, agentgw, setup_host
from agentgw.observe.host import host_cpus
from agentgw.paths import log_namespace

REPO = Path(__file__).resolve().parents[1]
A, B = "api", "core"
# logflood last: journald's rate limit of A's unit lasts 30 s and would swallow the log lines
# the following faults are checked by.
FAULTS = ("crashloop", "forkbomb", "memhog", "cpuhog", "fillhome", "ignoreterm", "logflood")
CGROUP = Path("/sys/fs/cgroup")
REGISTRY = "agentgw-registry.service"
REGISTRY_SOCKET = "/run/agentgw/registry.sock"
MIB = 1 << 20
# Read on the Unit interface; every other property the soak reads is the Service's.
UNIT_PROPERTIES = frozenset({"ActiveState", "SubState", "LoadState"})

# A's limits in the soak: small, so each fault reaches them within seconds.
A_LIMITS: dict[str, Any] = {
    "memory_max": "256M",
    "cpu_quota": "50%",
    "tasks_max": 64,
    "data_max": "512M",
    "file_max": "64M",
    # Pinned to the last CPU (CPUAffinity=), so a CPU hog leaves the others' CPUs alone; the
    # quota alone does not keep a sibling's /health p99 within 2x on 2 CPUs (a hog's bursts
    # delay every wake-up on the CPU it holds: measured 3-4x).
    "cpus": [os.cpu_count() - 1] if (os.cpu_count() or 1) > 1 else None,
}
# A's own journal: a small burst, so a flood hits the rate limit at once.
A_LOGS: dict[str, Any] = {"max_use": "64M", "rate_limit_burst": 1000, "cpu_quota": "25%"}
A_STOP_TIMEOUT_S = 2.0
# Every profile's: an unhealthy release is rolled back after this long.
HEALTH_TIMEOUT_S = 3.0
Links = tuple[str | None, str | None]


def log(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


def sh(*argv: str, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def unit(profile: str) -> str:
    return f"agent-gateway@{profile}.service"


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


# --- the host ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """Release shas by label, and each profile's listen address and health path."""

    shas: dict[str, str]
    listen: dict[str, tuple[str, int]]
    health: dict[str, str]


def other_cpus() -> list[int]:
    """The CPUs A is not pinned to; empty when A is not pinned (or this host has one CPU)."""
    if not A_LIMITS["cpus"]:
        return []
    return [c for c in range(os.cpu_count() or 1) if c not in A_LIMITS["cpus"]]


def soak_profile(name: str) -> dict[str, Any]:
    """The repo's example profile with the soak's health timeout; A's limits for A, and the
    CPUs A does not have for the others (the layout an operator gives a profile that may run
    hot: a CPU of its own)."""
    data: dict[str, Any] = yaml.safe_load((REPO / "gateways" / f"{name}.yaml").read_text())
    data.setdefault("health", {})["timeout_s"] = HEALTH_TIMEOUT_S
    others = other_cpus()
    if name != A and others:
        data.setdefault("resources", {})["cpus"] = others
    if name == A:
        data["resources"] = dict(A_LIMITS)
        data["logs"] = dict(A_LOGS)
        data["stop_timeout_s"] = A_STOP_TIMEOUT_S
    return data


SYSTEM_CONF = Path("/etc/systemd/system.conf.d/50-agentgw-soak.conf")


def partition_cpus() -> None:
    """Keep the host's other work off A's CPUs, as an operator who gives a profile that may run
    hot CPUs of its own does: systemd's default CPUAffinity= (system.conf, re-read by
    daemon-reexec) for every unit without its own, and the same affinity for what already runs
    (this soak included, the operator's session). A's gateway and A's journald keep theirs
    (their own CPUAffinity=). Without it, a hog held to its quota on its own CPU still pushes
    everything unpinned onto B's CPU, and B's baseline (taken while that work could use A's CPU
    too) is not the host B has while A runs hot. Nothing to do when A is not pinned."""
    others = other_cpus()
    if not others:
        return
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_CONF.write_text(f"[Manager]\nCPUAffinity={' '.join(map(str, others))}\n")
    sh("systemctl", "daemon-reexec")
    pin_all(set(others))


def unpartition_cpus() -> None:
    """Undo ``partition_cpus`` (the lab is shared with the other integration tests)."""
    if not SYSTEM_CONF.exists():
        return
    SYSTEM_CONF.unlink()
    sh("systemctl", "daemon-reexec")
    pin_all(set(host_cpus()))


def pin_all(cpus: set[int]) -> None:
    """Every thread in the lab (its own PID namespace) on ``cpus``."""
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except OSError:
            pass  # gone meanwhile


def set_up(build: Path) -> Host:
    """The host's CPUs partitioned (A's for A), init, keys, releases (good, broken, one per
    fault), the soak's profiles applied and on release A, and the registry started."""
    partition_cpus()
    releases = setup_host(REPO, build)
    shas = {"a": releases.a, "b": releases.b, "crash": releases.crash,
            "unhealthy": releases.unhealthy, "wrongsha": releases.wrongsha}
    for fault in FAULTS:
        sha = (build / fault / "VERSION").read_text().strip()
        shas[fault] = sha
        if not list((OPT / "releases").glob(f"{sha}-{fault}")):
            agentgw("release", "add", str(build / fault), "--sha", sha, "--label", fault,
                    "--sign-key", str(KEY))
    listen, health = {}, {}
    for name in PROFILES:
        data = soak_profile(name)
        (ETC / "gateways" / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        address, _, port = data["listen"].rpartition(":")
        listen[name] = (address, int(port))
        health[name] = data["health"].get("path", "/health")
    agentgw("apply")
    # B then A: every profile has a previous release, so rollbacks have a target and the
    # files (current and previous links) are the same set before and after the cycles.
    for name in PROFILES:
        for label in ("b", "a"):
            agentgw("promote", name, shas[label], "--allow-downgrade")
    sh("systemctl", "start", REGISTRY)
    return Host(shas, listen, health)


def restore_repo_profiles(build: Path) -> None:
    """The repo's example profiles again, all on release A (the lab is shared with the other
    integration tests), the CPUs no longer partitioned; works after a soak that failed
    half-way."""
    # the socket too: a connection to it would start the registry again
    sh("systemctl", "stop", f"{REGISTRY.removesuffix('.service')}.socket", REGISTRY, check=False)
    unpartition_cpus()
    for name in PROFILES:
        shutil.copy(REPO / "gateways" / f"{name}.yaml", ETC / "gateways" / f"{name}.yaml")
    agentgw("apply")
    good = (build / "good" / "VERSION").read_text().strip()
    for name in PROFILES:
        agentgw("promote", name, good, "--allow-downgrade")


def show(name: str, *props: str) -> dict[str, str]:
    """Properties of a unit as ``systemctl show`` prints them, read over D-Bus (agentgw.bus)."""
    with Systemd() as sd:
        return {
            p: str(sd.unit_properties(name, UNIT if p in UNIT_PROPERTIES else SERVICE, [p])[p])
            for p in props
        }


def pid_and_start(profile: str) -> tuple[int, int]:
    """MainPID and its start time in clock ticks (field 22 of /proc/<pid>/stat)."""
    pid = int(show(unit(profile), "MainPID")["MainPID"])
    stat = read_text(Path(f"/proc/{pid}/stat")) if pid else None
    return pid, int(stat.rpartition(")")[2].split()[19]) if stat else 0


def unified_root() -> Path:
    """Where cgroup2 is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified in a hybrid lab."""
    hybrid = CGROUP / "unified"
    return hybrid if (hybrid / "cgroup.procs").exists() else CGROUP


def cgroup_dir(name: str, controller: str | None = None) -> Path:
    """The unit's cgroup in the cgroup2 tree, or in ``controller``'s v1 hierarchy if the host
    (a hybrid lab) has one mounted."""
    path = show(name, "ControlGroup")["ControlGroup"].lstrip("/")
    if controller is not None and (CGROUP / controller / "cgroup.procs").exists():
        return CGROUP / controller / path
    return unified_root() / path


# v1 "no limit" values are near 2^63 (rounded to a page); cgroup2 writes "max".
V1_UNLIMITED = 1 << 62


def cgroup_limits(profile: str) -> dict[str, str | None]:
    return unit_limits(unit(profile))


def unit_limits(name: str) -> dict[str, str | None]:
    """A unit's memory.max, pids.max and cpu.max as cgroup2 writes them, read where the
    limit acts: the cgroup2 files, or the v1 controllers' (memory.limit_in_bytes, pids.max,
    cpu.cfs_quota_us/cfs_period_us) in a hybrid lab. None: that controller does not act here.
    """
    v2 = cgroup_dir(name)
    found = {f: read_text(v2 / f) for f in ("memory.max", "pids.max", "cpu.max")}
    memory = read_text(cgroup_dir(name, "memory") / "memory.limit_in_bytes")
    if found["memory.max"] is None and memory is not None:
        found["memory.max"] = "max" if int(memory) >= V1_UNLIMITED else memory
    if found["pids.max"] is None:
        found["pids.max"] = read_text(cgroup_dir(name, "pids") / "pids.max")
    cpu = cgroup_dir(name, "cpu")
    quota, period = read_text(cpu / "cpu.cfs_quota_us"), read_text(cpu / "cpu.cfs_period_us")
    if found["cpu.max"] is None and quota is not None and period is not None:
        found["cpu.max"] = f"{'max' if int(quota) < 0 else quota} {period}"
    return found


def oom_kills(name: str) -> int:
    """How many times the kernel's OOM killer acted in the unit's memory cgroup."""
    text = (read_text(cgroup_dir(name) / "memory.events")
            or read_text(cgroup_dir(name, "memory") / "memory.oom_control") or "")
    match = re.search(r"^oom_kill (\d+)", text, re.M)
    return int(match.group(1)) if match else 0


def cpu_seconds(name: str) -> float:
    """CPU time of a unit's cgroup (cpu.stat is there even without the cpu controller)."""
    stat = read_text(cgroup_dir(name) / "cpu.stat") or ""
    match = re.search(r"^usage_usec (\d+)", stat, re.M)
    return int(match.group(1)) / 1e6 if match else 0.0


def rlimit(pid: int, name: str) -> str | None:
    """A live process's soft limit ``name`` (e.g. "Max processes"), as /proc shows it."""
    for line in (read_text(Path(f"/proc/{pid}/limits")) or "").splitlines():
        if line.startswith(name):
            return line[len(name):].split()[0]
    return None


def journal(profile: str, since: float, grep: str) -> list[str]:
    """Lines of the profile's unit (its own journal) and of systemd about it, since a
    wall-clock time."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    out = sh("journalctl", f"--namespace=+{log_namespace(profile)}", "--no-pager", "-o", "cat",
             "--since", stamp, "-u", unit(profile), check=False)
    return [line for line in out.splitlines() if re.search(grep, line)]


def a_status(since: float) -> str:
    """A's row in ``agentgw status --json`` (state, restarts), and the failures the template's
    OnFailure= hook recorded in the history since ``since``."""
    proc = agentgw("status", A, "--json", check=False)
    try:
        row = json.loads(proc.stdout)["profiles"][0]
    except (ValueError, KeyError, IndexError):
        return f"status exited {proc.returncode}"
    text = f"{row['active_state']}/{row['sub_state']}"
    text += f", {row['restarts']} restarts" if row.get("restarts") else ""
    history = json.loads(agentgw("history", A, "--json").stdout)["records"]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
    failures = [r for r in history if r.get("action") == "failure" and r.get("time", "") >= stamp]
    return text + (f", {len(failures)} failure recorded" if failures else "")


def links(profile: str) -> Links:
    """Where current and previous point (release dir names)."""
    base = OPT / "gateways" / profile

    def target(name: str) -> str | None:
        path = base / name
        return os.readlink(path).rsplit("/", 1)[-1] if path.is_symlink() else None

    return target("current"), target("previous")


def aligned(profile: str) -> str | None:
    """None when ``agentgw status`` shows the profile active and aligned, else why not."""
    proc = agentgw("status", profile, "--json", check=False)
    try:
        row = json.loads(proc.stdout)["profiles"][0]
    except (ValueError, KeyError, IndexError):
        return f"status exited {proc.returncode}: {proc.stderr.strip()[:200]}"
    if row["aligned"]["state"] == "yes" and row["active_state"] == "active":
        return None
    return f"{row['active_state']}/{row['sub_state']}, aligned {row['aligned']['state']}: " \
           f"{row['aligned']['reason']}"


