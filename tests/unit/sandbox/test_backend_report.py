"""What the registry and ``status`` say about the sandbox backend, from the stored self-test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agentgw.cli.status import sandbox_line
from agentgw.paths import Layout
from agentgw.registry.reads import read_sandbox


def _store(layout: Layout, backend: str) -> None:
    base = layout.sandbox_state
    base.mkdir(parents=True, exist_ok=True)
    (base / "selftest.json").write_text(json.dumps(
        {"backend": backend, "time": "2026-12-04T04:00:00+00:00"}))


@pytest.mark.parametrize(
    ("backend", "boundary", "line"),
    [
        ("gvisor", True, "sandbox: gvisor (a security boundary)"),
        ("kvm", True, "sandbox: kvm (a security boundary)"),
        ("tcg", False, "sandbox: tcg (NOT a security boundary)"),
        ("none", False, "sandbox: none (NOT a security boundary)"),
    ],
)
def test_backend_and_boundary_are_reported(
    tmp_path: Path, backend: str, boundary: bool, line: str
) -> None:
    layout = Layout(root=tmp_path)
    _store(layout, backend)
    report = read_sandbox(layout, 0.0)
    assert (report.backend, report.boundary) == (backend, boundary)
    assert report.kvm == (backend == "kvm")
    assert sandbox_line(layout) == line


def test_no_selftest_is_unknown_not_guessed(tmp_path: Path) -> None:
    layout = Layout(root=tmp_path)
    report = read_sandbox(layout, 0.0)
    assert (report.backend, report.boundary) == ("unknown", None)
    assert sandbox_line(layout).startswith("sandbox: unknown")


def test_the_pool_of_the_newest_record_that_has_one_is_reported(tmp_path: Path) -> None:
    """The broker writes its pool's stats into each exec record; registry and status show the
    newest (an older record without one, a VM broker's first, does not hide it)."""
    from agentgw.sandbox.pool import PoolStats
    from agentgw.sandbox.protocol import render_record

    layout = Layout(root=tmp_path)
    _store(layout, "gvisor")
    stats = PoolStats(1, 1, 0, 5, 2, 0, 0.31)
    lines = [
        render_record(profile="api", uid=1, argv=["true"], via="broker", error="x",
                      pool=dataclasses.asdict(PoolStats(1, 0, 1, 0, 1, 0, None))),
        render_record(profile="api", uid=1, argv=["true"], via="broker", error="x",
                      pool=dataclasses.asdict(stats)),
        render_record(profile="api", uid=1, argv=["true"], via="direct", error="x"),
    ]
    layout.sandbox_execs.write_bytes(b"".join(lines))
    report = read_sandbox(layout, 0.0)
    assert report.pool == dataclasses.asdict(stats)
    assert "pool" not in report.recent_execs[-1]
    assert sandbox_line(layout) == "sandbox: gvisor (a security boundary); pool 1: 5 warm, 2 cold"
    spares = dataclasses.replace(stats, spares=2, spares_ready=2, served_spare=1)
    layout.sandbox_execs.write_bytes(render_record(
        profile="api", uid=1, argv=["true"], via="broker", error="x",
        pool=dataclasses.asdict(spares)))
    assert sandbox_line(layout) == ("sandbox: gvisor (a security boundary); pool 1: 5 warm, "
                                    "2 cold (1 in a spare unit of 2)")
