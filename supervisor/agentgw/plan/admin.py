"""Day-2 without root (pure): the admin group, its polkit rule and its sudoers rule.

Members of ``admin_group`` (agentgw.yaml; ``agentgw`` by default) start, stop and restart the
gateways' units through polkit (data/polkit: ``agent-gateway@*.service``, those three verbs
only) and run agentgw's day-2 commands as root through sudo (data/sudoers: each command's
arguments matched by a regular expression, no shell). ``init`` and ``apply`` create the group
and install both rules where polkit and sudo are installed (their rule dirs exist).

:data:`DAY2` is the sudoers rule's table in Python: the CLI checks a member's command line
against it before re-running through ``sudo -n``, so a refused line gets agentgw's own message
rather than sudo's; a unit test pins it to the shipped file.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from agentgw.model.actions import Action, EnsureGroup
from agentgw.paths import Layout
from agentgw.plan.host import ROOT, Observed, want_file

DEFAULT_GROUP = "agentgw"
# The venv named by the shipped sudoers rule (``make``'s install); rendered for another one.
DEFAULT_VENV = "/opt/agentgw/venv"

# command -> the regular expression its arguments (joined by spaces) must match
DAY2_ACT = {
    "promote": r"^promote( [a-z0-9]+| --allow-downgrade| --unless-current| --json)+$",
    "rollback": r"^rollback( [a-z0-9]+| --to| --json)+$",
    "restart": r"^restart( [a-z0-9]+| --json)+$",
}
DAY2_READ = {
    "status": r"^status( [a-z0-9]+| --json)*$",
    "history": r"^history( [a-z0-9]+| --verify| --json)*$",
    "logs": r"^logs( [a-z0-9]+| --json| --no-pager| -q| -f| -n [0-9]+"
            r"| -o (cat|short|short-iso|json))+$",
    "verify": r"^verify( [a-z0-9]+| --json)*$",
}
DAY2 = {**DAY2_ACT, **DAY2_READ}


def want_day2(args: list[str]) -> bool:
    """``args`` (after ``agentgw``) is a command line the sudoers rule lets a member run."""
    if not args or args[0] not in DAY2:
        return False
    return re.fullmatch(DAY2[args[0]], " ".join(args)) is not None


def shipped_rule(kind: str, name: str) -> str:
    return (resources.files("agentgw") / "data" / kind / name).read_text()


def render_polkit(group: str) -> str:
    text = shipped_rule("polkit", "50-agentgw.rules")
    return text.replace(f'isInGroup("{DEFAULT_GROUP}")', f'isInGroup("{group}")')


def render_sudoers(group: str, venv: str) -> str:
    """The shipped rule for ``group`` and the venv agentgw runs from (``sys.prefix``)."""
    text = shipped_rule("sudoers", "agentgw")
    text = text.replace(f"%{DEFAULT_GROUP} ALL", f"%{group} ALL")
    return text.replace(f"{DEFAULT_VENV}/bin/agentgw", f"{venv.rstrip('/')}/bin/agentgw")


def admin_dirs(layout: Layout) -> list[Path]:
    """The rule dirs (observed: a rule is installed only where its tool is)."""
    return [layout.polkit_rules.parent, layout.sudoers.parent]


def admin_files(layout: Layout) -> list[Path]:
    return [layout.polkit_rules, layout.sudoers]


def plan_admin(layout: Layout, observed: Observed, group: str, venv: str) -> list[Action]:
    """The admin group (a system group) where missing; the polkit rule where polkit is
    installed and the sudoers rule (root 0440) where sudo is. Idempotent."""
    actions: list[Action] = []
    if group not in observed.groups:
        actions.append(EnsureGroup(name=group))
    for path, text, mode in (
        (layout.polkit_rules, render_polkit(group), 0o644),
        (layout.sudoers, render_sudoers(group, venv), 0o440),
    ):
        if observed.paths.get(path.parent, ("",))[0] == "dir":
            actions += want_file(observed, path, text, ROOT, ROOT, mode)
    return actions
