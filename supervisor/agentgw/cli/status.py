"""``agentgw status [PROFILE] [--json]``: one row per profile, computed live.

Exit 3 when a shown profile is definitely not aligned ("no"). "unknown" — not running, nothing
promoted yet, systemd unreachable, /proc unreadable without root — is not a failure: it is
reported, with its reason, and the exit stays 0, so a host with a stopped profile still has a
passing status while a running profile on the wrong runtime never does.

Where the registry runs (``agentgw-registry.service``), the rows come from it: it holds a warm
snapshot and vouches that it is current (systemd's unit signals and the files' identities, see
:mod:`agentgw.registry.app`), so the command needs neither D-Bus nor the config loader. Without
a registry, or with ``--etc``/``--root``, the command computes the rows itself; ``source`` in
the JSON says which.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agentgw.cli.context import App, etc_option, pass_app
from agentgw.errors import AgentgwError, Exit, no_profile
from agentgw.paths import Layout

if TYPE_CHECKING:
    from agentgw.model.status import ProfileStatus


def render_table(statuses: Sequence[ProfileStatus]) -> str:
    """The status table with aligned columns, then one line per profile that is not aligned,
    not isolated, or down after a failed start (its cause and fix)."""
    from agentgw.model.status import COLUMNS

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
    notes += [
        f"{s.profile}: start failed: {s.start_failure.render()}"
        for s in statuses
        if s.start_failure is not None
    ]
    return "\n".join(lines + ([""] + notes if notes else []))


def exit_code(statuses: Sequence[ProfileStatus]) -> Exit:
    return Exit.VERIFY if any(s.aligned.state == "no" for s in statuses) else Exit.OK


def not_aligned(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Profiles of JSON status rows whose alignment is "no"."""
    return [str(r.get("profile")) for r in rows if (r.get("aligned") or {}).get("state") == "no"]


def from_registry(app: App) -> tuple[dict[str, Any], str] | None:
    """The registry's current ``/v1/profiles``: the document and its text, or None (no
    registry here, or it did not answer 200 with a profile list)."""
    from agentgw.registry.client import get_current

    body = get_current(app.layout.registry_socket, "/v1/profiles")
    if body is None:
        return None
    try:
        text = body.decode()
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("profiles"), list):
        return None
    return doc, text


def computed(app: App, etc: Path | None) -> tuple[dict[str, Any], str]:
    """The same document (and its text), computed by this command: config, D-Bus, /proc."""
    from agentgw.config.load import load_config
    from agentgw.fsio import iso
    from agentgw.model.status import ProfileList
    from agentgw.observe.status import status_now

    config = load_config(etc if etc is not None else app.layout.etc)
    taken = time.time()
    doc = ProfileList(
        generated_at=iso(taken),
        isolation_mode=config.host.isolation,
        profiles=tuple(status_now(app.layout, config)),
        source="direct",
    )
    return doc.model_dump(mode="json"), doc.model_dump_json(indent=2)


def sandbox_line(layout: Layout) -> str:
    """The sandbox backend of the last self-test and whether it is a security boundary."""
    from agentgw.registry.reads import read_sandbox

    found = read_sandbox(layout, time.time())
    if found.backend == "unknown":
        return "sandbox: unknown (no self-test recorded: run 'agentgw sandbox selftest')"
    verdict = "a security boundary" if found.boundary else "NOT a security boundary"
    pool = found.pool
    if not pool:
        return f"sandbox: {found.backend} ({verdict})"
    spare = (f" ({pool.get('served_spare')} in a spare unit of {pool.get('spares')})"
             if pool.get("spares") else "")
    return (f"sandbox: {found.backend} ({verdict}); pool {pool.get('size')}: "
            f"{pool.get('served_warm')} warm, {pool.get('served_cold')} cold{spare}")


@click.command("status")
@click.argument("profile", required=False)
@etc_option("computes the rows here")
@click.option("--json", "as_json", is_flag=True, help="Print the status records as JSON.")
@pass_app
def status(app: App, profile: str | None, etc: Path | None, as_json: bool) -> None:
    """One row per profile: state, pid, uptime, restarts, memory, release, aligned, isolation,
    last promote; then the sandbox backend and whether it is a security boundary.

    Asks the running registry (agentgw-registry.service) for a current snapshot, else computes
    the rows itself. Exits 3 when a profile shown is not aligned; "unknown" (not running,
    nothing promoted, systemd unreachable) does not fail.
    """
    found = None
    if etc is None and app.layout.root == Path("/"):
        found = from_registry(app)
    doc, text = found if found is not None else computed(app, etc)
    rows: list[dict[str, Any]] = doc["profiles"]
    if profile is not None:
        rows = [r for r in rows if r.get("profile") == profile]
        if not rows:
            raise no_profile(profile, (str(r.get("profile")) for r in doc["profiles"]))
        doc["profiles"] = rows
        text = json.dumps(doc, indent=2, ensure_ascii=False)
    if as_json:
        click.echo(text.rstrip("\n"))
    elif rows:
        from agentgw.model.status import ProfileList

        click.echo(render_table(ProfileList.model_validate(doc).profiles))
    else:
        click.echo("no profiles: add gateways/<name>.yaml")
    if not as_json:
        click.echo(sandbox_line(app.layout))
    bad = not_aligned(rows)
    if bad:
        raise AgentgwError(
            f"not aligned: {', '.join(bad)}",
            hint="see the reasons above; 'agentgw restart' re-proves",
            code=Exit.VERIFY,
        )
