"""``agentgw logs``: a profile's gateway output, from the journal namespace it writes to."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from agentgw.cli.context import App, etc_option, pass_app
from agentgw.config.load import load_config
from agentgw.errors import AgentgwError
from agentgw.paths import log_namespace, unit_name


def journalctl_argv(profile: str, extra: tuple[str, ...], *, as_json: bool = False) -> list[str]:
    """The profile's own journal interleaved with the default one (``+``: systemd's lines
    about the unit, such as starts, stops and failures, are there), for its unit. ``--json``
    (ours, also after PROFILE) is journalctl's ``-o json``: one JSON object per entry."""
    wants_json = as_json or "--json" in extra
    rest = [arg for arg in extra if arg != "--json"]
    return ["journalctl", f"--namespace=+{log_namespace(profile)}", "-u", unit_name(profile),
            *(["-o", "json"] if wants_json else []), *rest]


@click.command(
    "logs",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@etc_option()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry (-o json).")
@click.argument("profile")
@click.argument("journalctl_args", nargs=-1, type=click.UNPROCESSED)
@pass_app
def logs(
    app: App, etc: Path | None, as_json: bool, profile: str, journalctl_args: tuple[str, ...]
) -> None:
    """Show PROFILE's gateway output and systemd's lines about its unit.

    Each profile logs to a journal of its own (LogNamespace=agentgw-PROFILE), read, rate
    limited and size-capped by its own journald. This runs

      journalctl --namespace=+agentgw-PROFILE -u agent-gateway@PROFILE.service ARGS...

    where ARGS are passed to journalctl unchanged, e.g. -f, -n 50, -o cat, --since today.
    """
    load_config(etc if etc is not None else app.layout.etc, only=profile).profile(profile)
    argv = journalctl_argv(profile, journalctl_args, as_json=as_json)
    if shutil.which(argv[0]) is None:
        raise AgentgwError("journalctl is not installed", hint="apt-get install systemd")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)  # noqa: S606 - argv list, never a shell
