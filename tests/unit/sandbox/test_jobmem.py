"""The pure parts of per-job memory limits (agentgw/sandbox/jobmem.py): the size (request plus
overhead, never above the unit's own), which unit names the broker accepts, where the kernel's
limit is read and what is reported from it, and that a failure to set it is reported, not
claimed. The D-Bus call and polkit are proven in the lab (tests/integration/limits)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgw.bus import Systemd
from agentgw.errors import AgentgwError, die
from agentgw.sandbox import jobmem
from agentgw.sandbox.job import MemoryLimit

MiB = 1 << 20
CG = "/system.slice/system-agentgw\\x2djob.slice/agentgw-job@1-89-0.service"


def test_the_limit_is_the_request_plus_the_overhead_at_most_the_units() -> None:
    assert jobmem.memory_max(128, jobmem.UNLIMITED) == (128 + jobmem.OVERHEAD_MB) * MiB
    assert jobmem.memory_max(128, 768 * MiB) == (128 + jobmem.OVERHEAD_MB) * MiB
    assert jobmem.memory_max(1024, 768 * MiB) == 768 * MiB


@pytest.mark.parametrize("name", ["agentgw-job@1-89-0.service",
                                  "agentgw-job@12-3456-61234.service"])
def test_a_job_units_name_is_accepted(name: str) -> None:
    assert jobmem.check_job_unit(name) == name


@pytest.mark.parametrize("name", [
    "", "agent-gateway@api.service", "agentgw-sandbox.service", "agentgw-job@.service",
    "agentgw-job@1-2-3.service\n", "agentgw-job@1-2-3.socket", "agentgw-job@a-b-c.service",
    "x-agentgw-job@1-2-3.service",
])
def test_any_other_name_is_refused(name: str) -> None:
    with pytest.raises(AgentgwError, match="named itself"):
        jobmem.check_job_unit(name)


def test_the_kernels_limit_is_read_from_cgroup2_then_v1(tmp_path: Path) -> None:
    assert jobmem.read_limit(tmp_path, CG) is None  # no memory controller
    v1 = tmp_path / "sys/fs/cgroup/memory" / CG.lstrip("/")
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("201326592\n")
    assert jobmem.read_limit(tmp_path, CG) == 201326592
    v2 = tmp_path / "sys/fs/cgroup" / CG.lstrip("/")
    v2.mkdir(parents=True, exist_ok=True)
    (v2 / "memory.max").write_text("max\n")
    assert jobmem.read_limit(tmp_path, CG) == jobmem.UNLIMITED


def test_a_limit_is_reported_enforced_only_as_the_kernel_holds_it() -> None:
    assert jobmem.verdict(192 * MiB, 192 * MiB) == MemoryLimit(max_bytes=192 * MiB, enforced=True)
    missing = jobmem.verdict(192 * MiB, None)
    assert not missing.enforced and "no memory controller" in missing.note
    looser = jobmem.verdict(192 * MiB, jobmem.UNLIMITED)
    assert not looser.enforced and "holds" in looser.note


def test_a_failure_to_set_the_limit_is_reported_not_raised(tmp_path: Path) -> None:
    def no_bus() -> Systemd:
        raise die("cannot connect to the system bus")

    got = jobmem.Limiter(tmp_path, connect=no_bus).apply("agentgw-job@1-89-0.service", 128)
    assert got == MemoryLimit(max_bytes=0, enforced=False,
                              note="not set: cannot connect to the system bus")


def test_a_bad_name_is_refused_before_the_bus(tmp_path: Path) -> None:
    def unused() -> Systemd:
        raise AssertionError("the bus was used")

    with pytest.raises(AgentgwError, match="named itself"):
        jobmem.Limiter(tmp_path, connect=unused).apply("agent-gateway@api.service", 128)
