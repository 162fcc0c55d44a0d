"""Shared test set-up: the integration marker runs only inside the lab; the lab fixture boots one.

Integration tests need a real systemd + D-Bus. ``make test`` runs them inside a lab
(``scripts/integration``); anywhere else they are reported skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgw.lab.machine import Lab, booted
from agentgw.lab.spec import IN_LAB_ENV, LabSpec, why_unavailable
from agentgw.log import configure

REPO = Path(__file__).resolve().parents[1]
configure(debug=False, json=True)


def in_lab() -> bool:
    return os.environ.get(IN_LAB_ENV) == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_lab():
        outside = pytest.mark.skip(reason="boots its own lab from the host; not nested in a lab")
        for item in items:
            if "lab" in item.keywords:
                item.add_marker(outside)
        return
    reason = why_unavailable()
    not_here = pytest.mark.skip(
        reason="integration test: runs inside the lab (scripts/integration, make test)"
        + (f"; this machine cannot boot one: {reason}" if reason else "")
    )
    no_lab = pytest.mark.skip(reason=f"needs a lab: {reason}")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(not_here)
        elif "lab" in item.keywords and reason is not None:
            item.add_marker(no_lab)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A lab booted from the host for the session (the code of ``agentgw lab``), then torn down."""
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(f"needs a lab: {reason}")
    spec = LabSpec(name=f"pytest-{uuid.uuid4().hex[:8]}", binds=(REPO,))
    with booted(spec) as machine:
        yield machine
