"""The warm pool's bookkeeping, with fake VMs: size and budget held, one job per VM, all killed."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentgw.errors import AgentgwError
from agentgw.sandbox import pool as pool_module
from agentgw.sandbox.image import Image
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.pool import WarmPool, check_budget
from agentgw.sandbox.vm import Machine

IMAGE = Image(Path("/nonexistent"), {"kernel_version": "6.1"})


@dataclass(eq=False)
class FakeVm:
    killed: bool = False
    closed: bool = False
    pid: int = 0

    def alive(self) -> bool:
        return not self.killed

    def kill(self) -> None:
        self.killed = True

    def close(self) -> None:
        self.killed = self.closed = True


@dataclass(eq=False)
class FakeWarm:
    vm: FakeVm = field(default_factory=FakeVm)

    def wait_ready(self) -> float:
        if self.vm.killed:
            raise AgentgwError("killed while booting")
        return 0.01


@dataclass
class Fleet:
    """Every fake VM the pool started, and how many were held at most at once."""

    started: list[FakeWarm] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, *args: object, **kwargs: object) -> FakeWarm:
        with self.lock:
            self.started.append(FakeWarm())
            return self.started[-1]


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Fleet:
    fleet = Fleet()
    monkeypatch.setattr(pool_module, "start_warm", fleet.start)

    def run_warm(warm: FakeWarm, request: JobRequest, *, reap: object) -> JobResult:
        warm.vm.kill()
        reap(warm.vm)  # type: ignore[operator]
        return JobResult(exit_code=0, backend="tcg", warm=True)

    monkeypatch.setattr(pool_module, "run_warm", run_warm)
    monkeypatch.setattr(pool_module, "run_cold",
                        lambda *a, **k: JobResult(exit_code=0, backend="tcg", warm=False))
    return fleet


def test_budget_is_checked_before_anything_boots() -> None:
    """size x memory over the budget is refused as bad input (exit 2)."""
    check_budget(2, 256, 512)
    with pytest.raises(AgentgwError) as err:
        check_budget(3, 256, 512)
    assert err.value.code == 2
    with pytest.raises(AgentgwError):
        WarmPool(IMAGE, Machine("tcg"), size=4, memory_mb=256, budget_mb=1000)


def test_pool_fills_to_size_serves_warm_and_refills(fleet: Fleet) -> None:
    """Two VMs get ready; a request takes one (warm), it is destroyed, a third replaces it."""
    with WarmPool(IMAGE, Machine("tcg"), size=2, memory_mb=128) as p:
        assert p.wait_ready(timeout=5)
        result = p.run(JobRequest(argv=("true",), memory_mb=128))
        assert result.warm
        assert p.wait_ready(timeout=5)
        stats = p.stats()
        assert (stats.ready, stats.served_warm, stats.served_cold) == (2, 1, 0)
        assert len(fleet.started) == 3
        assert fleet.started[0].vm.killed
    assert all(w.vm.closed for w in fleet.started)


def test_request_that_does_not_fit_runs_cold(fleet: Fleet) -> None:
    """Other memory than the pool's VMs: cold boot, the warm VM stays for a fitting request."""
    with WarmPool(IMAGE, Machine("tcg"), size=1, memory_mb=128) as p:
        assert p.wait_ready(timeout=5)
        assert not p.run(JobRequest(argv=("true",), memory_mb=512)).warm
        assert p.stats().ready == 1


def test_empty_pool_runs_cold(fleet: Fleet) -> None:
    """Size 0 never boots anything ahead and still serves requests."""
    with WarmPool(IMAGE, Machine("tcg"), size=0, memory_mb=128) as p:
        assert not p.run(JobRequest(argv=("true",), memory_mb=128)).warm
    assert fleet.started == []


def test_dead_warm_vm_is_skipped(fleet: Fleet) -> None:
    """A ready VM that died while waiting is discarded, not handed a job."""
    with WarmPool(IMAGE, Machine("tcg"), size=1, memory_mb=128) as p:
        assert p.wait_ready(timeout=5)
        fleet.started[0].vm.kill()
        assert not p.run(JobRequest(argv=("true",), memory_mb=128)).warm


def test_close_kills_every_vm_and_stops_threads(fleet: Fleet) -> None:
    """After close nothing the pool started is left running, and its threads are gone."""
    p = WarmPool(IMAGE, Machine("tcg"), size=3, memory_mb=64).start()
    assert p.wait_ready(timeout=5)
    p.close()
    assert all(w.vm.closed for w in fleet.started)
    assert not any(t.name.startswith("agentgw-pool") for t in threading.enumerate())
