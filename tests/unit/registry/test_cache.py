"""The snapshot cache: fresh values are free, stale ones are served while one reload runs,
and errors are never cached."""

from __future__ import annotations

import threading

import anyio
import pytest

from agentgw.registry.cache import TTLCache


class Loads:
    def __init__(self) -> None:
        self.count = 0
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self) -> int:
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("bus down")
        self.count += 1
        return self.count


def get(cache: TTLCache[int]) -> int:
    return anyio.run(cache.get)


def test_fresh_value_is_loaded_once() -> None:
    """Within the TTL every get returns the first load."""
    now = [0.0]
    loads = Loads()
    cache = TTLCache(loads, 1.0, clock=lambda: now[0])
    assert [1, 1, 1] == [get(cache) for _ in range(3)]
    assert 1 == loads.count


def test_stale_value_is_served_during_one_background_reload() -> None:
    """Past the TTL, gets return the old value at once while exactly one reload runs."""
    now = [0.0]
    loads = Loads()
    cache = TTLCache(loads, 1.0, max_stale=5.0, clock=lambda: now[0])
    get(cache)
    now[0] = 1.5
    loads.gate.clear()
    assert [1, 1, 1] == [get(cache) for _ in range(3)], "stale value, no waiting"
    loads.gate.set()
    cache.wait_idle()
    assert (2, 2) == (loads.count, get(cache))


def test_too_old_value_waits_and_errors_reach_the_caller() -> None:
    """Past max_stale the get waits for the reload; a failing reload raises, is not cached,
    and the next get tries again."""
    now = [0.0]
    loads = Loads()
    cache = TTLCache(loads, 1.0, max_stale=5.0, clock=lambda: now[0])
    get(cache)
    now[0] = 10.0
    loads.fail = True
    with pytest.raises(RuntimeError, match="bus down"):
        get(cache)
    loads.fail = False
    assert 2 == get(cache)


def test_failed_background_reload_keeps_the_stale_value() -> None:
    """A background reload that fails leaves the old value in place (until max_stale)."""
    now = [0.0]
    loads = Loads()
    cache = TTLCache(loads, 1.0, max_stale=5.0, clock=lambda: now[0])
    get(cache)
    now[0] = 2.0
    loads.fail = True
    assert 1 == get(cache)
    cache.wait_idle()
    assert (1, 1) == (get(cache), loads.count)
