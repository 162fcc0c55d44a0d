"""promote, rollback, start, stop, restart and history: one profile at a time, over D-Bus."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict, Unpack

import click

from agentgw.apply.control import Controller, exit_code
from agentgw.apply.history import read_history, verify_history
from agentgw.cli.context import App, echo_json, etc_option, pass_app
from agentgw.config.load import load_config
from agentgw.errors import Exit
from agentgw.model.control import Outcome
from agentgw.observe.gateway import GatewayProbe
from agentgw.observe.units import check_systemd_here
from agentgw.paths import unit_name

json_option = click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")


@contextmanager
def controller(
    app: App, etc: Path | None, as_json: bool, profile: str | None = None
) -> Iterator[Controller]:
    """A Controller on one D-Bus connection, closed when the command ends.

    With ``profile``, only that profile's config file is read (see ``load_config``).
    """
    check_systemd_here()
    from agentgw.bus import Systemd

    config = load_config(etc if etc is not None else app.layout.etc, only=profile)

    def out(line: str) -> None:
        click.echo(line, err=as_json)

    with Systemd() as sd:
        yield Controller(app.layout, config, sd, GatewayProbe(app.layout), out)


def report(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        echo_json(outcome.model_dump(mode="json"))
    else:
        verdict = {
            "ok": "ok",
            "rolled_back": f"ROLLED BACK to {outcome.previous}",
            "failed": "FAILED (the previous release did not come back either)",
        }[outcome.result]
        total = sum(p.ms for p in outcome.phases)
        click.echo(f"{outcome.op} {outcome.profile} -> {outcome.release}: {verdict} "
                   f"({total:.0f} ms)")
        if outcome.reason:
            click.echo(f"  reason: {outcome.reason}")
        if not outcome.siblings_unchanged:
            click.echo("  siblings CHANGED: " + ", ".join(outcome.siblings_changed))
    sys.exit(exit_code(outcome))


def already_runs(ctl: Controller, profile: str, sha: str) -> str | None:
    """The release PROFILE runs when it is SHA and the gateway is active and aligned on it."""
    from agentgw.bus import Systemd
    from agentgw.observe.status import collect_status, read_release

    ctl.profile(profile)
    # The common case, moving to another release, is decided by the link alone (bench_fleet:
    # the full status costs ~0.1 s per host of a rolling promote).
    linked = read_release(ctl.layout.current(profile), ctl.layout.releases)
    if linked is None or not (linked.sha or "").startswith(sha.lower()):
        return None
    sd = ctl.sd if isinstance(ctl.sd, Systemd) else None
    (row,) = (r for r in collect_status(ctl.layout, ctl.config, sd) if r.profile == profile)
    release = row.release
    if (release is None or not (release.sha or "").startswith(sha.lower())
            or not row.up or row.aligned.state != "yes"):
        return None
    return release.name


class PromoteFlags(TypedDict):
    """promote's flags (see the option decorators)."""

    allow_downgrade: bool
    unless_current: bool


@click.command("promote")
@click.argument("profile")
@click.argument("sha")
@click.option("--allow-downgrade", is_flag=True, help="Allow a release older than current.")
@click.option("--unless-current", is_flag=True,
              help="Do nothing (exit 0, result 'unchanged') when PROFILE already runs SHA, "
              "active and aligned: for idempotent callers (agentgw.fleet.promote).")
@etc_option()
@json_option
@pass_app
def promote(
    app: App, profile: str, sha: str, etc: Path | None, as_json: bool,
    **flags: Unpack[PromoteFlags],
) -> None:
    """Switch PROFILE to the release SHA (a unique prefix of >= 7 hex digits) and prove it.

    Phases: verify, flip current (keeping previous), restart over D-Bus, ready, aligned (the new
    process imports exactly current = the release), healthy; then siblings unchanged. Any
    failure flips back, restarts and proves the previous release (exit 1, rolled_back).
    Promoting the release that runs restarts it and proves it again, unless --unless-current.
    """
    with controller(app, etc, as_json, profile) as ctl:
        kept = already_runs(ctl, profile, sha) if flags["unless_current"] else None
        if kept is not None:
            reason = "already runs this release, active and aligned"
            if as_json:
                echo_json({"op": "promote", "profile": profile, "release": kept,
                           "result": "unchanged", "reason": reason, "phases": []})
            else:
                click.echo(f"promote {profile} -> {kept}: unchanged ({reason})")
            return
        if not as_json:
            click.echo(f"promote {profile} -> {sha}")
        outcome = ctl.promote(profile, sha, allow_downgrade=flags["allow_downgrade"])
    report(outcome, as_json)


@click.command("rollback")
@click.argument("profile")
@click.option("--to", "to", metavar="SHA", help="Release to return to (default: previous).")
@etc_option()
@json_option
@pass_app
def rollback(app: App, profile: str, to: str | None, etc: Path | None, as_json: bool) -> None:
    """Switch PROFILE back to its previous release (or --to SHA), with the promote proofs."""
    with controller(app, etc, as_json, profile) as ctl:
        outcome = ctl.rollback(profile, to)
    report(outcome, as_json)


@click.command("restart")
@click.argument("profile")
@etc_option()
@json_option
@pass_app
def restart(app: App, profile: str, etc: Path | None, as_json: bool) -> None:
    """Restart PROFILE's gateway and prove it ready, aligned and healthy."""
    with controller(app, etc, as_json, profile) as ctl:
        outcome = ctl.restart(profile)
    report(outcome, as_json)


def _simple(verb: str) -> click.Command:
    @click.command(verb, help=f"{verb.capitalize()} PROFILE's gateway and wait for the job.")
    @click.argument("profile")
    @etc_option()
    @pass_app
    def command(app: App, profile: str, etc: Path | None) -> None:
        with controller(app, etc, False, profile) as ctl:
            ctl.profile(profile)
            unit = unit_name(profile)
            job = getattr(ctl.sd, verb)(unit)
        click.echo(f"{verb} {unit}: {job}")
        if job != "done":
            sys.exit(Exit.FAILED)

    return command


start = _simple("start")
stop = _simple("stop")


@click.command("history")
@click.argument("profile", required=False)
@click.option("--verify", "check", is_flag=True,
              help="Check the hash chain across every retained file; exit 3 if broken.")
@json_option
@pass_app
def history(app: App, profile: str | None, check: bool, as_json: bool) -> None:
    """The hash-chained log of every promote, rollback, restart, recovery and apply, read
    across its rotated files (history.jsonl.N .. .1, then history.jsonl; see agentgw rotate).

    Columns: sequence, time, who ran it (the sudo caller; '-' on records older than that),
    action, profile, result, release and reason.
    """
    log = app.layout.history
    if check:
        problems = verify_history(log)
        if as_json:
            echo_json({"ok": not problems, "problems": problems})
        else:
            for p in problems:
                click.echo(f"history: {p}")
            if not problems:
                click.echo(f"history: {len(read_history(log))} records, chain intact")
        sys.exit(Exit.VERIFY if problems else Exit.OK)
    records = read_history(log, profile)
    if as_json:
        echo_json({"records": [r.model_dump(mode="json") for r in records]})
        return
    for r in records:
        what = r.detail.get("release") or r.detail.get("target") or ""
        why = r.detail.get("reason") or ""
        click.echo(f"{r.seq:>4} {r.time} {r.actor or '-':<10} {r.action:<9} "
                   f"{r.profile or '-':<10} {r.result:<12} {what} {why}".rstrip())
