"""The pool of prepared job units, with fake units: size held, one job per unit, fitting
requests warm and others cold, dead units dropped, a lost one retried cold, all closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from agentgw.errors import AgentgwError
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.jobspec import Prepare
from agentgw.sandbox.protocol import BrokerError
from agentgw.sandbox.units import UnitPool

SPEC = Prepare("gvisor", memory_mb=256, cpus=1, nproc=128)


def result(exit_code: int = 0) -> JobResult:
    return JobResult(exit_code=exit_code, stdout=b"", stderr=b"", stdout_truncated=False,
                     stderr_truncated=False, timed_out=False, backend="gvisor", warm=False,
                     duration_s=0.01)


@dataclass(eq=False)
class FakeUnit:
    prepare_s: float = 0.2
    dead: bool = False
    lost: bool = False
    ran: list[JobRequest] = field(default_factory=list)
    closed: bool = False

    def alive(self) -> bool:
        return not self.dead and not self.closed

    def run(self, request: JobRequest) -> JobResult:
        assert not self.ran, "a unit serves one job"
        self.ran.append(request)
        self.closed = True
        if self.lost:
            raise BrokerError("unavailable", "the gVisor sandbox ended before the job started")
        return result(7)

    def close(self) -> None:
        self.closed = True


@dataclass
class Units:
    made: list[FakeUnit] = field(default_factory=list)
    fail: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    shapes: list[Prepare] = field(default_factory=list)

    def maker(self, spec: Prepare = SPEC) -> Callable[[], FakeUnit]:
        return lambda: self.prepare(spec)

    def prepare(self, spec: Prepare) -> FakeUnit:
        with self.lock:
            self.shapes.append(spec)
            if self.fail:
                self.fail -= 1
                raise AgentgwError("no job socket")
            self.made.append(FakeUnit())
            return self.made[-1]


def cold_runs() -> tuple[list[JobRequest], object]:
    seen: list[JobRequest] = []

    def cold(request: JobRequest) -> JobResult:
        seen.append(request)
        return result(0)

    return seen, cold


def test_a_fitting_request_runs_warm_on_a_prepared_unit_and_it_is_replaced() -> None:
    units, (colds, cold) = Units(), cold_runs()
    with UnitPool(SPEC, 2, make=units.maker(), cold=cold) as pool:  # type: ignore[arg-type]
        assert pool.wait_ready(timeout=5)
        first = pool.run(JobRequest(argv=("true",)))
        assert (first.warm, first.exit_code, colds) == (True, 7, [])
        assert pool.wait_ready(timeout=5)
        stats = pool.stats()
        assert (stats.size, stats.ready, stats.served_warm, stats.served_cold) == (2, 2, 1, 0)
        assert stats.last_boot_s == 0.2
        assert len(units.made) == 3 and set(units.shapes) == {SPEC}
        assert [len(u.ran) for u in units.made] == [1, 0, 0]
    assert all(u.closed for u in units.made)


def test_another_shape_or_an_empty_pool_runs_cold() -> None:
    units, (colds, cold) = Units(), cold_runs()
    with UnitPool(SPEC, 1, make=units.maker(), cold=cold) as pool:  # type: ignore[arg-type]
        assert pool.wait_ready(timeout=5)
        other = pool.run(JobRequest(argv=("true",), memory_mb=512))
        assert (other.warm, len(colds)) == (False, 1)
        assert pool.stats().ready == 1  # the prepared unit was not spent on it
    empty = UnitPool(SPEC, 0, make=units.maker(), cold=cold)  # type: ignore[arg-type]
    with empty:
        assert empty.run(JobRequest(argv=("true",))).warm is False
        assert (empty.stats().served_cold, len(colds)) == (1, 2)


def test_a_dead_unit_is_dropped_and_a_lost_one_is_retried_cold() -> None:
    units, (colds, cold) = Units(), cold_runs()
    pool = UnitPool(SPEC, 1, make=units.maker(), cold=cold)  # type: ignore[arg-type]
    with pool:
        assert pool.wait_ready(timeout=5)
        units.made[0].dead = True
        assert pool.run(JobRequest(argv=("true",))).warm is False
        assert units.made[0].closed and units.made[0].ran == []
        assert pool.wait_ready(timeout=5)
        units.made[-1].lost = True
        again = pool.run(JobRequest(argv=("true",)))
        assert (again.warm, len(colds)) == (False, 2)
        stats = pool.stats()
        assert (stats.served_warm, stats.served_cold) == (0, 2)


def test_prepare_failures_are_counted_and_retried() -> None:
    units, (_, cold) = Units(fail=1), cold_runs()
    with UnitPool(SPEC, 1, make=units.maker(), cold=cold) as pool:  # type: ignore[arg-type]
        assert pool.wait_ready(timeout=5)  # after a 1 s back-off
        assert pool.stats().boot_failures == 1


def test_close_closes_every_prepared_unit_and_stops_refilling() -> None:
    units, (_, cold) = Units(), cold_runs()
    pool = UnitPool(SPEC, 3, make=units.maker(), cold=cold).start()  # type: ignore[arg-type]
    assert pool.wait_ready(timeout=5)
    pool.close()
    assert len(units.made) == 3 and all(u.closed for u in units.made)
    assert pool.wait_ready(timeout=0.1) is False
    with pytest.raises(AgentgwError):
        UnitPool(SPEC, -1, make=units.maker(), cold=cold)  # type: ignore[arg-type]


def test_a_prepared_unit_that_went_away_is_replaced_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentgw.sandbox import units as units_module

    monkeypatch.setattr(units_module, "PRUNE_S", 0.05)
    units, (_, cold) = Units(), cold_runs()
    with UnitPool(SPEC, 1, make=units.maker(), cold=cold) as pool:  # type: ignore[arg-type]
        assert pool.wait_ready(timeout=5)
        units.made[0].dead = True
        deadline = time.monotonic() + 5
        while len(units.made) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pool.wait_ready(timeout=5)
        assert units.made[0].closed and len(units.made) == 2
        assert pool.run(JobRequest(argv=("true",))).warm is True


def test_spare_units_take_any_shape_answer_cold_and_stand_behind_the_prepared_pool() -> None:
    """A spare pool (no spec) serves any request on a held unit, not marked warm; as the
    prepared pool's ``cold`` it takes what the prepared units do not fit; a lost spare (ended
    before it was prepared) goes to the spare pool's own cold."""
    spares_made, (colds, cold) = Units(), cold_runs()
    prepared_made = Units()
    with UnitPool(None, 2, make=spares_made.maker(), cold=cold) as spares, UnitPool(
        SPEC, 1, make=prepared_made.maker(), cold=spares.run,
    ) as pool:
        assert spares.wait_ready(timeout=5) and pool.wait_ready(timeout=5)
        other = pool.run(JobRequest(argv=("true",), memory_mb=512, cpus=2))
        assert (other.warm, other.exit_code, colds) == (False, 7, [])  # on a spare
        assert [len(u.ran) for u in spares_made.made][:2].count(1) == 1
        assert [len(u.ran) for u in prepared_made.made] == [0]
        fitting = pool.run(JobRequest(argv=("true",)))
        assert (fitting.warm, fitting.exit_code) == (True, 7)
        assert spares.wait_ready(timeout=5)
        for unit in spares.__dict__["_ready"]:
            unit.lost = True
        lost = spares.run(JobRequest(argv=("true",), memory_mb=64))
        assert (lost.warm, lost.exit_code, len(colds)) == (False, 0, 1)  # retried cold
        stats = spares.stats()
        assert (stats.size, stats.served_warm, stats.served_cold) == (2, 1, 1)
