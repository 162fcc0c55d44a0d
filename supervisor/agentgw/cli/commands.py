"""The list of command groups, one module each; main.py registers what this returns."""

from __future__ import annotations

import click

from agentgw.errors import AgentgwError


def _planned(name: str, summary: str, issue: int) -> click.Command:
    """A command of DESIGN.md's surface that this version does not ship yet.

    It is listed so ``--help`` shows the whole surface, says so in its help, and fails loudly.
    """

    @click.command(
        name,
        help=f"{summary} [not yet available: issue #{issue}]",
        short_help=f"{summary} [not yet available]",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=True,
    )
    def planned() -> None:
        raise AgentgwError(
            f"'agentgw {name}' is not available in this version",
            hint=f"it is tracked in issue #{issue}",
        )

    return planned


def all_commands() -> list[click.Command]:
    from agentgw.cli.config import config
    from agentgw.cli.lab import lab
    from agentgw.cli.launch import launch

    shipped: list[click.Command] = [lab]
    shipped.append(config)
    shipped.append(launch)
    from agentgw.cli.host import apply, init, plan

    shipped += [init, plan, apply]
    from agentgw.cli.release import release

    shipped.append(release)
    from agentgw.cli.control import history, promote, restart, rollback, start, stop

    shipped += [promote, rollback, start, stop, restart, history]
    planned = [
        _planned("init", "Install the template unit, launcher and state dirs.", 3),
        _planned("plan", "Show the actions apply would take.", 3),
        _planned("apply", "Create users, dirs, env files and units for every profile.", 3),
        _planned("release", "Add, list, verify and garbage-collect releases.", 3),
        _planned("lint", "Lint the template and drop-ins; exposure score.", 3),
        _planned("promote", "Promote a release, prove alignment, roll back on failure.", 5),
        _planned("rollback", "Switch a profile back to its previous release.", 5),
        _planned("start", "Start a profile's gateway.", 5),
        _planned("stop", "Stop a profile's gateway.", 5),
        _planned("restart", "Restart a profile's gateway and prove alignment.", 5),
        _planned("status", "One row per profile: state, pid, release, aligned, isolation.", 5),
        _planned("history", "The hash-chained log of promotes, rollbacks and applies.", 5),
        _planned("verify", "Run the isolation proofs and write signed proof records.", 6),
        _planned("attest", "Verify a signed proof record.", 6),
        _planned("launch", "Render a profile's launch command (--dry-run).", 4),
        _planned("exec", "Run a command in a profile's microVM sandbox.", 8),
        _planned("registry", "Serve the read-only registry endpoint.", 7),
    ]
    names = {c.name for c in shipped}
    return shipped + [c for c in planned if c.name not in names]
