"""``agentgw config``: validate the host settings and profile files before anything uses them."""

from __future__ import annotations

from pathlib import Path

import click

from agentgw.cli.context import App, echo_json, etc_option, pass_app
from agentgw.config import load_config
from agentgw.observe.secrets import check_credentials
from agentgw.plan.advice import advise


@click.group("config")
def config() -> None:
    """Check the host settings (agentgw.yaml) and the profiles (gateways/*.yaml)."""


@config.command("check")
@etc_option()
@click.option("--json", "as_json", is_flag=True, help="Print the validated config as JSON.")
@pass_app
def check(app: App, etc: Path | None, as_json: bool) -> None:
    """Validate every config file; on an error print file:line: field and exit 2. Credential
    files readable by anyone but root are refused too (exit 2, with the fix)."""
    loaded = load_config(etc if etc is not None else app.layout.etc)
    check_credentials(loaded.profiles, loaded.profile_files)
    if as_json:
        echo_json(loaded.to_json())
        return
    host = loaded.host
    where = "agentgw.yaml" if loaded.host_file else "defaults: no agentgw.yaml"
    click.echo(f"ok: {loaded.etc}")
    click.echo(f"host: {host.isolation} isolation ({where})")
    for name, profile in loaded.profiles.items():
        shown = loaded.profile_files[name].relative_to(loaded.etc).as_posix()
        click.echo(f"profile {name}: {profile.mode} on {profile.listen} ({shown})")
        for note in advise(profile):
            click.echo(f"  note: {note}")
    if not loaded.profiles:
        click.echo("no profiles: add gateways/<name>.yaml")
