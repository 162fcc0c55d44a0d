"""The command table: name -> (module, attribute, one-line help).

Commands are imported only when run, so ``agentgw status`` pays for status's imports alone
(start-up time is most of a status call). ``--help`` lists them from this table.
"""

from __future__ import annotations

import importlib

import click

from agentgw.errors import AgentgwError

# name: (module, attribute, short help); None as module: not shipped yet (issue number in help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("agentgw.cli.host", "init", "Install the template unit, launcher, state dirs."),
    "plan": ("agentgw.cli.host", "plan", "Show what apply would change, as a diff."),
    "apply": ("agentgw.cli.host", "apply", "Users, dirs, env files, drop-ins, units."),
    "config": ("agentgw.cli.config", "config", "Check the host and profile configuration."),
    "release": ("agentgw.cli.release", "release", "Add, list, verify and gc releases."),
    "promote": ("agentgw.cli.control", "promote", "Switch a profile to a release, with proofs."),
    "rollback": ("agentgw.cli.control", "rollback", "Return a profile to its previous release."),
    "start": ("agentgw.cli.control", "start", "Start a profile's gateway."),
    "stop": ("agentgw.cli.control", "stop", "Stop a profile's gateway."),
    "restart": ("agentgw.cli.control", "restart", "Restart a profile's gateway, with proofs."),
    "status": ("agentgw.cli.status", "status", "One row per profile: state, release, aligned."),
    "history": ("agentgw.cli.control", "history", "The hash-chained operations log."),
    "rotate": ("agentgw.cli.rotate", "rotate", "Rotate the history and exec logs by size."),
    "metrics": ("agentgw.cli.metrics", "metrics", "Prometheus text, or a node_exporter textfile."),
    "logs": ("agentgw.cli.logs", "logs", "A profile's gateway output, from its own journal."),
    "launch": ("agentgw.cli.launch", "launch", "Show what the launcher would exec (--dry-run)."),
    "registry": ("agentgw.cli.registry", "registry", "Serve the read-only registry endpoint."),
    "sandbox": ("agentgw.cli.sandbox", "sandbox", "Build and self-test the microVM sandbox."),
    "exec": ("agentgw.cli.sandbox", "exec_", "Run a command in a microVM for a profile."),
    "lab": ("agentgw.cli.lab", "lab", "Boot a disposable systemd for tests and demos."),
    "lint": ("agentgw.cli.lint", "lint", "Lint the units: runtime once, independent, exposure."),
    "verify": ("agentgw.cli.proofs", "verify", "Run the isolation proofs; signed records."),
    "attest": ("agentgw.cli.proofs", "attest", "Verify a signed proof record."),
    "onfailure": ("agentgw.cli.proofs", "onfailure", "Record a gateway failure (OnFailure= hook)."),
}

# Part of DESIGN.md's surface, not shipped yet: listed, marked, and failing loudly.
PLANNED: dict[str, tuple[str, int]] = {}


def planned(name: str) -> click.Command:
    summary, issue = PLANNED[name]

    @click.command(
        name,
        help=f"{summary} [not yet available: issue #{issue}]",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def command() -> None:
        raise AgentgwError(
            f"'agentgw {name}' is not available in this version",
            hint=f"it is tracked in issue #{issue}",
        )

    return command


def short_help(name: str) -> str:
    if name in COMMANDS:
        return COMMANDS[name][2]
    return f"{PLANNED[name][0]} [not yet available]"


def names() -> list[str]:
    return sorted({*COMMANDS, *PLANNED})


def load(name: str) -> click.Command | None:
    if name in COMMANDS:
        module, attr, _ = COMMANDS[name]
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}.{attr} is not a click command")
        return command
    if name in PLANNED:
        return planned(name)
    return None
