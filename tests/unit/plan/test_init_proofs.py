"""init installs the shipped units: registry, sandbox broker, periodic verify, OnFailure= hook."""

from __future__ import annotations

import configparser
from pathlib import Path

from agentgw.model.actions import UnitAction, WriteFile
from agentgw.paths import Layout
from agentgw.plan.host import Observed, init_files, plan_init
from agentgw.plan.shipped import shipped_units
from tests.unit.plan.test_host_plan import after

REPO = Path(__file__).resolve().parents[3]


def test_init_installs_the_proof_units_as_shipped_once(tmp_path: Path) -> None:
    """Each shipped unit (registry, sandbox, verify service + timer, onfailure hook) is
    written (0644, the repo's text), triggers a daemon-reload, is observed by init, and is
    not planned again once present."""
    layout = Layout(tmp_path)
    empty = Observed(users=frozenset(), groups=frozenset(), paths={}, units={})
    actions = plan_init(layout, empty, "#!launcher\n", "default\n")
    files = {a.path: a for a in actions if isinstance(a, WriteFile)}
    assert {"agentgw-registry.service", "agentgw-sandbox.service", "agentgw-verify.service",
            "agentgw-verify.timer", "agentgw-onfailure@.service"} <= set(shipped_units())
    for name in shipped_units():
        written = files[layout.unit_dir / name]
        assert (0o644, (REPO / "systemd" / name).read_text()) == (written.mode, written.content)
        assert written.path in init_files(layout)
    assert UnitAction(verb="daemon-reload", why="unit files changed") in actions
    assert plan_init(layout, after(actions, empty), "#!launcher\n", "default\n") == []


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((REPO / "systemd" / name).read_text())
    return parser


def test_template_hooks_onfailure_and_the_hook_runs_agentgw() -> None:
    """The template names the hook for its own instance; the hook and the verify service run
    the agentgw subcommands; the timer starts the verify service."""
    assert "agentgw-onfailure@%i.service" == unit("agent-gateway@.service")["Unit"]["OnFailure"]
    assert unit("agentgw-onfailure@.service")["Service"]["ExecStart"].endswith(
        "/agentgw onfailure %i")
    assert unit("agentgw-verify.service")["Service"]["ExecStart"].endswith("/agentgw verify")
    timer = unit("agentgw-verify.timer")
    assert "timers.target" == timer["Install"]["WantedBy"]
    assert "OnUnitActiveSec" in timer["Timer"]
