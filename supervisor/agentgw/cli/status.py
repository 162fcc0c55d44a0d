"""``agentgw status [PROFILE] [--json]``: one row per profile, computed live.

Exit 3 when a shown profile is definitely not aligned ("no"). "unknown" — not running, nothing
promoted yet, systemd unreachable, /proc unreadable without root — is not a failure: it is
reported, with its reason, and the exit stays 0, so a host with a stopped profile still has a
passing status while a running profile on the wrong runtime never does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import click

from agentgw.cli.context import App, pass_app
from agentgw.config.load import load_config
from agentgw.errors import AgentgwError, Exit, usage
from agentgw.model.status import COLUMNS, ProfileList, ProfileStatus
from agentgw.observe.status import iso, status_now


def render_table(statuses: Sequence[ProfileStatus]) -> str:
    """The status table with aligned columns, then one line per profile that is not aligned."""
    rows = [[c.upper() for c in COLUMNS]] + [list(s.cells().values()) for s in statuses]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    notes = [
        f"{s.profile}: aligned {s.aligned.state}: {s.aligned.reason}"
        for s in statuses
        if s.aligned.state != "yes"
    ]
    notes += [
        f"{s.profile}: isolation {s.isolation.state}: {s.isolation.reason}"
        for s in statuses
        if s.isolation.state != "isolated"
    ]
    return "\n".join(lines + ([""] + notes if notes else []))


def exit_code(statuses: Sequence[ProfileStatus]) -> Exit:
    return Exit.VERIFY if any(s.aligned.state == "no" for s in statuses) else Exit.OK


@click.command("status")
@click.argument("profile", required=False)
@click.option(
    "--etc",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Config directory [default: ROOT/etc/agentgw].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status records as JSON.")
@pass_app
def status(app: App, profile: str | None, etc: Path | None, as_json: bool) -> None:
    """One row per profile: state, pid, uptime, restarts, memory, release, aligned, isolation,
    last promote.

    Exits 3 when a profile shown is not aligned; "unknown" (not running, nothing promoted,
    systemd unreachable) does not fail.
    """
    config = load_config(etc if etc is not None else app.layout.etc)
    if profile is not None and profile not in config.profiles:
        known = ", ".join(config.profiles) or "none"
        raise usage(f"no profile {profile!r}", hint=f"known profiles: {known}")
    taken = time.time()
    statuses = [s for s in status_now(app.layout, config) if profile in (None, s.profile)]
    if as_json:
        doc = ProfileList(
            generated_at=iso(taken), isolation_mode=config.host.isolation, profiles=tuple(statuses)
        )
        click.echo(doc.model_dump_json(indent=2))
    elif statuses:
        click.echo(render_table(statuses))
    else:
        click.echo("no profiles: add gateways/<name>.yaml")
    code = exit_code(statuses)
    if code != Exit.OK:
        bad = ", ".join(s.profile for s in statuses if s.aligned.state == "no")
        raise AgentgwError(
            f"not aligned: {bad}", hint="see the reasons above; 'agentgw restart' re-proves",
            code=code,
        )
