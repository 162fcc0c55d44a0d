"""The gateway unit's cgroup limits act, on the real units, in a lab that can enforce them.

Runs in a ``hybrid`` lab (``scripts/integration`` boots one for this directory): cgroup2 plus
the host's v1 cpu, memory and pids controllers, delegated read-write (agentgw.lab.cgroups). The
``unified`` lab the other tests use has no resource controllers on these machines, where the
same checks say "not enforced". Each fault is provoked in profile api (A) exactly as
``make soak`` does; what is asserted here is A's containment by the cgroup limit itself, read
where it acts: cpu.cfs_quota_us and A's measured CPU use, memory.limit_in_bytes and the OOM
killer's count, pids.max. (Core's latency under A's faults is the soak's table.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks.blast import CHECKS, SETTLE_S, Contained, Seen, act, cpu_quota
from benchmarks.soak_host import (
    A_LIMITS,
    A,
    Host,
    cgroup_limits,
    cpu_seconds,
    pid_and_start,
    restore_repo_profiles,
    set_up,
    unified_root,
    unit,
)

from tests.integration.support import agentgw

pytestmark = pytest.mark.integration

WINDOW_S = 3.0


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    assert unified_root() != Path("/sys/fs/cgroup"), (
        "this module needs a hybrid lab (scripts/integration boots one; "
        "agentgw lab run --cgroups hybrid)")
    build = tmp_path_factory.mktemp("build")
    try:
        yield set_up(build)
    finally:
        restore_repo_profiles(build)


def provoke(host: Host, name: str) -> tuple[dict[str, str | None], Contained]:
    """Promote A to the fault, let it act for a window, judge its containment; A back to its
    good release afterwards."""
    since = time.time() - 1
    agentgw("promote", A, host.shas[name], "--allow-downgrade", check=False)
    limits = cgroup_limits(A)
    time.sleep(SETTLE_S)
    seen = Seen(since, pid_and_start(A)[0], limits, WINDOW_S)
    cpu0, t0 = cpu_seconds(unit(A)), time.monotonic()
    try:
        act(name, seen)
        time.sleep(max(0.0, WINDOW_S - (time.monotonic() - t0)))
        seen.cpu_used = (cpu_seconds(unit(A)) - cpu0) / (time.monotonic() - t0)
        return limits, CHECKS[name](seen)
    finally:
        agentgw("promote", A, host.shas["a"], "--allow-downgrade")


def test_cpu_quota_holds_a_cpu_hog(host: Host) -> None:
    limits, contained = provoke(host, "cpuhog")
    quota, enforced = cpu_quota(limits)
    assert enforced, limits
    assert contained.held and contained.not_enforced == [], contained
    used = float(re.search(r"A used ([\d.]+) CPUs", contained.evidence).group(1))  # type: ignore[union-attr]
    assert 0.5 * quota <= used <= quota * 1.1, contained.evidence


def test_memory_max_kills_a_memory_hog(host: Host) -> None:
    """LimitDATA is set above MemoryMax here, so it is the cgroup limit that acts."""
    limits, contained = provoke(host, "memhog")
    assert limits["memory.max"] == str(int(A_LIMITS["memory_max"][:-1]) << 20), limits
    assert contained.held and contained.not_enforced == [], contained
    assert "OOM-killed" in contained.evidence, contained.evidence


def test_tasks_max_holds_a_fork_bomb(host: Host) -> None:
    limits, contained = provoke(host, "forkbomb")
    assert limits["pids.max"] == str(A_LIMITS["tasks_max"]), limits
    assert contained.held and contained.not_enforced == [], contained
    assert f"TasksMax={A_LIMITS['tasks_max']}" in contained.mechanism, contained.mechanism
