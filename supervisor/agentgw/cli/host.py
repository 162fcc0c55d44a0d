"""``agentgw init``, ``plan`` and ``apply``: observe the host, plan actions, carry them out."""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import click

from agentgw.apply.history import append_history
from agentgw.apply.host import UnitControl, apply_actions
from agentgw.cli.context import App, echo_json, etc_option, pass_app
from agentgw.config.load import Config, load_config
from agentgw.model.actions import Action
from agentgw.observe.host import HostState, check_cpus, host_cpus, observe_host
from agentgw.observe.secrets import check_credentials
from agentgw.observe.units import systemd_here, unit_states
from agentgw.paths import Layout, journald_unit, unit_name
from agentgw.plan.admin import DEFAULT_GROUP, admin_dirs, admin_files, plan_admin
from agentgw.plan.host import (
    Observed,
    init_dirs,
    init_files,
    plan_init,
    plan_profiles,
    profile_dirs,
    profile_files,
    render_plan,
)
from agentgw.plan.relay import relay_units
from agentgw.plan.shipped import PACKAGED_MARK, Install
from agentgw.plan.units import launcher_source

DEFAULT_HOST_CONFIG = """\
# agentgw host settings; see the repo's agentgw.yaml for every key with comments.
isolation: production
require_signature: false
"""


def to_observed(state: HostState, units: dict[str, tuple[str, str]] | None) -> Observed:
    return Observed(
        users=state.users,
        groups=state.groups,
        paths={p: (s.kind, s.owner, s.group, s.mode, s.content) for p, s in state.paths.items()},
        leftovers=state.leftovers,
        profiles_on_host=state.profiles_on_host,
        units=units,
        which=state.which,
    )


def installed() -> Install:
    """This agentgw's venv, and whether the Debian package installed it (its mark file)."""
    venv = Path(sys.prefix)
    return Install(venv=str(venv), packaged=(venv / PACKAGED_MARK).is_file())


def observe_for_init(layout: Layout, units: dict[str, tuple[str, str]] | None) -> Observed:
    dirs = [d for d, *_ in init_dirs(layout)] + admin_dirs(layout)
    files = init_files(layout) + admin_files(layout)
    return to_observed(observe_host(layout, dirs=dirs, files=files, tools=()), units)


def init_admin_group(layout: Layout) -> str:
    """admin_group of an existing agentgw.yaml (init never rewrites it), else the default."""
    if not layout.host_config.is_file():
        return DEFAULT_GROUP
    return load_config(layout.etc, only="").host.admin_group


def observe_for_apply(
    layout: Layout, config: Config, units_wanted: bool
) -> tuple[Observed, list[str]]:
    names = sorted(config.profiles)
    first = observe_host(layout, dirs=[], files=[], tools=())
    every = sorted(set(names) | first.profiles_on_host)
    dirs: list[Path] = admin_dirs(layout)
    files: list[Path] = admin_files(layout)
    for name in every:
        dirs += [d for d, *_ in profile_dirs(name, config.host, layout)]
        dirs += [layout.current(name), layout.previous(name)]
        files += profile_files(name, layout)
    tools = sorted({t for p in config.profiles.values() for t in p.denied_tools})
    state = observe_host(layout, dirs=dirs, files=files, tools=tools)
    wanted = [u for n in every for u in (unit_name(n), journald_unit(n), *relay_units(n))]
    units = unit_states(wanted) if units_wanted else None
    return to_observed(state, units), every


def bus_for(layout: Layout) -> AbstractContextManager[UnitControl | None]:
    """The systemd connection when it manages this root; none under a relocated --root."""
    if layout.root != Path("/") or not systemd_here():
        return nullcontext(None)
    from agentgw.bus import Systemd

    return Systemd()


def report(actions: list[Action], *, as_json: bool, applied: bool) -> None:
    if as_json:
        echo_json({"applied": applied, "actions": [a.model_dump(mode="json") for a in actions]})
        return
    click.echo(render_plan(actions))


def systemd_note(layout: Layout) -> None:
    if layout.root != Path("/") or not systemd_here():
        click.echo(
            "note: systemd does not manage this root; unit actions (reload, enable, start) "
            "are not planned",
            err=True,
        )


@click.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print the actions as JSON.")
@pass_app
def init(app: App, as_json: bool) -> None:
    """Install the hardened units, the launcher, state dirs and a default host config; the
    admin group (admin_group) and its polkit and sudoers rules (day-2 without root).

    The units run this agentgw (its venv). Installed by the Debian package, the package owns
    the units (/usr/lib/systemd/system): init writes none, and removes an unchanged copy a
    make install left in /etc/systemd/system (it would shadow the package's). Idempotent: a
    second run changes nothing and says so; an existing agentgw.yaml is never rewritten.
    """
    layout = app.layout
    install = installed()
    with bus_for(layout) as units:
        observed = observe_for_init(layout, {} if units is not None else None)
        actions = plan_init(layout, observed, launcher_source(), DEFAULT_HOST_CONFIG, install)
        actions += plan_admin(layout, observed, init_admin_group(layout), install.venv)
        apply_actions(actions, units)
    systemd_note(layout)
    report(actions, as_json=as_json, applied=True)
    if not as_json:
        click.echo(
            "next: profiles in gateways/; a runtime agentgw did not write (any Python server): "
            "README 'Deploying an existing runtime' (readiness, release build)"
        )


def _config(app: App, etc: Path | None) -> Config:
    config = load_config(etc if etc is not None else app.layout.etc)
    check_cpus(config.profiles, host_cpus())
    check_credentials(config.profiles, config.profile_files)
    return config


@click.command("plan")
@etc_option()
@click.option("--prune", is_flag=True, help="Also plan the removal of profiles not configured.")
@click.option("--json", "as_json", is_flag=True, help="Print the actions as JSON.")
@pass_app
def plan(app: App, etc: Path | None, prune: bool, as_json: bool) -> None:
    """Show what apply would do, as a readable diff. Changes nothing."""
    config = _config(app, etc)
    layout = app.layout
    wanted = layout.root == Path("/") and systemd_here()
    observed, _ = observe_for_apply(layout, config, wanted)
    actions = plan_admin(layout, observed, config.host.admin_group, sys.prefix)
    actions += plan_profiles(
        config.profiles, config.host, layout, observed, prune=prune, stamp=_stamp()
    )
    systemd_note(layout)
    if not config.host.isolated:
        click.echo("note: convenience mode: every profile runs as one user; NOT isolated", err=True)
    report(actions, as_json=as_json, applied=False)


@click.command("apply")
@etc_option()
@click.option(
    "--prune",
    is_flag=True,
    help="Stop and disable profiles no longer configured; move their home and logs to the "
    "archive (never deleted).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the applied actions as JSON.")
@pass_app
def apply(app: App, etc: Path | None, prune: bool, as_json: bool) -> None:
    """Create users, dirs, env files and drop-ins; reload systemd; start promoted profiles;
    the admin group and its polkit and sudoers rules, like init.

    A second apply reports no changes and touches nothing.
    """
    config = _config(app, etc)
    layout = app.layout
    with bus_for(layout) as units:
        observed, _ = observe_for_apply(layout, config, units is not None)
        actions = plan_admin(layout, observed, config.host.admin_group, sys.prefix)
        actions += plan_profiles(
            config.profiles, config.host, layout, observed, prune=prune, stamp=_stamp()
        )
        apply_actions(actions, units)
    append_history(layout.history, "apply", "ok", changes=len(actions), prune=prune,
                   retention=config.host.rotation.retention())
    systemd_note(layout)
    if not config.host.isolated:
        click.echo("note: convenience mode: every profile runs as one user; NOT isolated", err=True)
    report(actions, as_json=as_json, applied=True)


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
