"""Day-2 without root: what a non-root caller of ``agentgw`` may run, and how.

Members of the admin group run the day-2 commands (plan/admin.py's table: promote, rollback,
restart; status, history, logs, verify): ``agentgw`` re-runs itself as root through
``sudo -n`` and the shipped sudoers rule, which checks the same arguments again. Everyone
else, and members asking for anything that changes the host's setup (apply, init, ...), gets
one line saying so (exit 2). Root, the commands that need no root (config check, lint,
launch --dry-run, --help...) and a tree relocated with --root go on unchanged.
"""

from __future__ import annotations

import grp
import os
import shutil
import sys

from agentgw.errors import AgentgwError, usage
from agentgw.machine import actor
from agentgw.paths import ROOT_ENV
from agentgw.plan.admin import DAY2, DEFAULT_GROUP, want_day2

# Change the host's setup or control units outside the day-2 rule: root only.
ROOT_ONLY = ("init", "plan", "apply", "start", "stop", "onfailure")
HELP = ("-h", "--help", "--version")


def admin_group() -> str:
    """admin_group of agentgw.yaml (readable by all), else the default."""
    from agentgw.config.load import load_config
    from agentgw.paths import Layout

    try:
        return load_config(Layout.from_env().etc, only="").host.admin_group
    except AgentgwError:
        return DEFAULT_GROUP


def is_member(group: str) -> bool:
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    return gid == os.getgid() or gid in os.getgroups()


def relocated(args: list[str]) -> bool:
    """``--root``/``AGENTGW_ROOT`` names another tree than the host's: a test or development
    tree the caller's own rights apply to, no sudo involved."""
    root = os.environ.get(ROOT_ENV) or "/"
    for i, arg in enumerate(args):
        if arg == "--root" and i + 1 < len(args):
            root = args[i + 1]
        elif arg.startswith("--root="):
            root = arg.removeprefix("--root=")
    return os.path.realpath(root) != "/"


def check_caller(args: list[str]) -> None:
    """As root, or for a command that needs no root: return. A member's day-2 command line:
    exec it through sudo. Anything else: raise the refusal."""
    if os.geteuid() == 0 or any(a in HELP for a in args) or relocated(args):
        return
    command = next((a for a in args if a in DAY2 or a in ROOT_ONLY), None)
    if command is None:
        return
    group = admin_group()
    allowed = ", ".join(DAY2)
    if command in ROOT_ONLY:
        raise usage(f"agentgw {command} needs root",
                    hint=f"members of group {group} may run: {allowed}")
    if not is_member(group):
        raise usage(
            f"agentgw {command} needs root or membership of group {group}",
            hint=f"an admin adds you: usermod -aG {group} {actor()} "
            "(then log in again); the registry shows a profile's own user its profile",
        )
    if not want_day2(args):
        raise usage(
            f"'agentgw {' '.join(args)}' is not allowed to group {group}",
            hint=f"{command} PROFILE... with its read-only flags only (no --root, --etc, "
            "--debug); see 'agentgw --help' and the README's 'Day-2 without root'",
        )
    sudo = shutil.which("sudo")
    if sudo is None:
        raise usage("sudo is not installed", hint="an admin runs: apt-get install sudo")
    agentgw = os.path.join(sys.prefix, "bin", "agentgw")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sudo, ["sudo", "-n", "--", agentgw, *args])  # noqa: S606 - argv list, no shell
