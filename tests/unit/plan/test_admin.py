"""The admin group's rules: the shipped sudoers file parses (visudo) and holds exactly the
regular expressions the CLI checks; init/apply plan the group and both rules once, only where
polkit and sudo are installed, and nothing on a second run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agentgw.apply.host import apply_actions
from agentgw.cli.host import observe_for_init
from agentgw.model.actions import EnsureGroup, WriteFile
from agentgw.paths import Layout
from agentgw.plan.admin import (
    DAY2,
    plan_admin,
    render_polkit,
    render_sudoers,
    shipped_rule,
    want_day2,
)


def test_sudoers_rule_is_the_clis_table() -> None:
    """Each Cmnd of the shipped rule is agentgw with one of DAY2's expressions, and no other."""
    text = shipped_rule("sudoers", "agentgw")
    found = re.findall(r"/opt/agentgw/venv/bin/agentgw (\^\S.*?\$)(?:, \\|$)", text, re.M)
    assert sorted(found) == sorted(DAY2.values())
    assert "%agentgw ALL = (root) NOPASSWD: AGENTGW_ACT, AGENTGW_READ" in text


@pytest.mark.skipif(shutil.which("visudo") is None, reason="sudo (visudo) is not installed")
@pytest.mark.parametrize(("group", "venv"), [("agentgw", "/opt/agentgw/venv"),
                                             ("ops", "/usr/lib/agentgw")])
def test_rendered_sudoers_parses(tmp_path: Path, group: str, venv: str) -> None:
    """visudo accepts the rule as shipped and rendered for another group and venv (a broken
    file in /etc/sudoers.d would break sudo for everyone)."""
    path = tmp_path / "agentgw"
    text = render_sudoers(group, venv)
    path.write_text(text)
    check = subprocess.run(["visudo", "-cf", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"%{group} ALL" in text and f"{venv}/bin/agentgw ^promote" in text
    assert "/opt/agentgw/venv" not in text or venv == "/opt/agentgw/venv"


def test_polkit_rule_names_the_group_units_and_verbs() -> None:
    text = render_polkit("ops")
    assert 'subject.isInGroup("ops")' in text
    assert "org.freedesktop.systemd1.manage-units" in text
    assert r"/^agent-gateway@[a-z][a-z0-9]*\.service$/" in text
    assert 'verb === "start" || verb === "stop" || verb === "restart"' in text


def test_polkit_rule_lets_the_broker_set_job_units_properties_only() -> None:
    """The sandbox broker's rule (issue 16): its user, job units' names, set-property; the lab
    test (tests/integration/limits/test_job_memory.py) proves what polkit makes of it."""
    text = render_polkit("ops")
    assert 'subject.user !== "agentgw-sandbox"' in text
    assert r"/^agentgw-job@[0-9]+-[0-9]+-[0-9]+\.service$/" in text
    assert 'action.lookup("verb") === "set-property"' in text
    assert text.count("polkit.Result.YES") == 2


@pytest.mark.parametrize(("line", "ok"), [
    ("promote api 0123abc", True),
    ("promote api 0123abc --allow-downgrade --json", True),
    ("rollback api --to 0123abc", True),
    ("restart mcp", True),
    ("status", True),
    ("status --json", True),
    ("history api --verify", True),
    ("logs api -n 50 -o cat --no-pager", True),
    ("verify api", True),
    ("apply", False),
    ("promote api 0123abc --etc /tmp/evil", False),
    ("promote ../x 0123abc", False),
    ("status --root /tmp/x", False),
    ("logs api --file /etc/shadow", False),
    ("verify --lifecycle", False),
    ("init", False),
])
def test_want_day2(line: str, ok: bool) -> None:
    assert want_day2(line.split()) is ok


def test_init_plans_group_and_rules_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With /etc/polkit-1/rules.d and /etc/sudoers.d present: the group and both files (the
    sudoers rule 0440); applied, a second plan is empty. Without the dirs: the group only."""
    layout = Layout(tmp_path)
    empty = observe_for_init(layout, None)
    bare = plan_admin(layout, empty, "nonexistentgroup", "/opt/agentgw/venv")
    assert bare == [EnsureGroup(name="nonexistentgroup")]
    for path in (layout.polkit_rules, layout.sudoers):
        path.parent.mkdir(parents=True)
    observed = observe_for_init(layout, None)
    actions = plan_admin(layout, observed, "nonexistentgroup", "/opt/agentgw/venv")
    assert actions[0] == EnsureGroup(name="nonexistentgroup")
    files = [a for a in actions if isinstance(a, WriteFile)]
    assert [(a.path, a.mode) for a in files] == [(layout.polkit_rules, 0o644),
                                                (layout.sudoers, 0o440)]
    apply_actions(files, None)
    again = plan_admin(layout, observe_for_init(layout, None), "nonexistentgroup",
                       "/opt/agentgw/venv")
    assert again == [EnsureGroup(name="nonexistentgroup")]
    assert layout.sudoers.stat().st_mode & 0o777 == 0o440
