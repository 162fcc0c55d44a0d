"""``agentgw lint``: the gateway units as systemd sees them; exit 3 on any finding."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from agentgw.cli.context import App, echo_json, etc_option, pass_app
from agentgw.config.load import load_config
from agentgw.errors import Exit
from agentgw.observe.lint import lint_profiles
from agentgw.observe.units import check_systemd_here


@click.command("lint")
@click.argument("profile", required=False)
@etc_option()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@pass_app
def lint(app: App, profile: str | None, etc: Path | None, as_json: bool) -> None:
    """Check each gateway unit: no PYTHONPATH in the unit or its drop-ins, no
    Requires/PartOf/BindsTo between instances, readiness as the profile says (health: Type=exec
    and the health waiter; notify: Type=notify, NotifyAccess=all), `systemd-analyze verify`
    clean, and the
    `systemd-analyze security` exposure at or under exposure_threshold. Exit 3 on any finding.
    """
    check_systemd_here()
    config = load_config(etc if etc is not None else app.layout.etc)
    names = [profile] if profile else list(config.profiles)
    for name in names:
        config.profile(name)
    from agentgw.bus import Systemd

    with Systemd() as sd:
        readiness = {n: config.profiles[n].readiness for n in names}
        findings = lint_profiles(app.layout, sd, readiness, config.host.exposure_threshold)
    bad = [f for f in findings if not f.ok]
    if as_json:
        echo_json({"ok": not bad, "findings": [asdict(f) for f in findings]})
    else:
        for f in findings:
            mark = "ok  " if f.ok else "FAIL"
            click.echo(f"{mark} {f.unit:<28} {f.check:<24} {f.detail}")
        click.echo(f"lint: {len(bad)} finding(s)" if bad else "lint: clean")
    sys.exit(Exit.VERIFY if bad else Exit.OK)
