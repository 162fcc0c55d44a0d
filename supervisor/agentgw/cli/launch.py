"""``agentgw launch --dry-run PROFILE``: the exact command the launcher would exec, from config."""

from __future__ import annotations

import shlex
import sys
from importlib import resources
from pathlib import Path

import click

from agentgw.cli.context import App, echo_json, etc_option, pass_app
from agentgw.config import load_config
from agentgw.errors import AgentgwError, Exit, usage
from agentgw.plan.envfile import render_env
from agentgw.run import run

# The launcher's own exit code for a configuration it refuses to start with.
EX_CONFIG = 78
ERROR_PREFIX = "agentgw-launch: error: "
DRYRUN_PREFIX = "dryrun: would exec "
BANNER_PREFIX = "agentgw-launch "


@click.command("launch")
@click.argument("profile")
@click.option(
    "--dry-run",
    "dry_run",
    is_flag=True,
    help="Resolve and print; required (systemd starts gateways: agentgw start).",
)
@etc_option()
@click.option(
    "--json", "as_json", is_flag=True, help="Print the banner, its fields and the argv as JSON."
)
@pass_app
def launch(app: App, profile: str, dry_run: bool, etc: Path | None, as_json: bool) -> None:
    """Show what the launcher would run for PROFILE: its banner and the exact argv.

    Renders PROFILE's env file from the config, as apply writes it, and runs the shipped
    launcher on it with --env-file, which never executes the gateway. When the profile's
    current symlink exists under --root, the launcher resolves it as on a start (release,
    manifest sha, script, interpreter, home). When it does not (off-host, or before the first
    promote), the launcher runs --offline: nothing on the host is read, and runtime= and sha=
    say unresolved:offline. Exits 3 when the launcher would refuse to start (exit 78 on start).
    """
    if not dry_run:
        raise usage(
            "only 'agentgw launch --dry-run PROFILE' is supported",
            hint="systemd starts gateways through the launcher: agentgw start PROFILE",
        )
    config = load_config(etc if etc is not None else app.layout.etc)
    env_text = render_env(config.profile(profile), config.host, app.layout)
    offline = not app.layout.current(profile).is_symlink()
    banner, argv = dry_run_launcher(env_text, offline=offline)
    if as_json:
        head = banner.partition(" exec=")[0].removeprefix(BANNER_PREFIX)
        fields = dict(word.split("=", 1) for word in shlex.split(head))
        echo_json({"offline": offline, "fields": fields, "argv": argv, "banner": banner})
        return
    click.echo(banner)
    click.echo(DRYRUN_PREFIX + shlex.join(argv))


def dry_run_launcher(env_text: str, *, offline: bool) -> tuple[str, list[str]]:
    """Run the shipped launcher on ``env_text``; return its banner line and the argv it chose."""
    source = resources.files("agentgw") / "data" / "launcher" / "launch"
    with resources.as_file(source) as path:
        # -I -S as in the launcher's shebang; this interpreter, so it also runs off-host.
        argv = [sys.executable, "-I", "-S", str(path), "--env-file", "/dev/stdin"]
        if offline:
            argv.append("--offline")
        done = run(argv, check=False, input=env_text)
    line = done.stderr.strip()
    if done.returncode == EX_CONFIG and line.startswith(ERROR_PREFIX):
        problem, _, fix = line.removeprefix(ERROR_PREFIX).partition("; fix: ")
        raise AgentgwError(
            f"the launcher would refuse to start: {problem}", hint=fix, code=Exit.VERIFY
        )
    if done.returncode != 0 or not line.startswith(BANNER_PREFIX):
        raise AgentgwError(
            f"the launcher failed (exit {done.returncode}): {line or 'no output'}",
            hint="rerun with --debug",
        )
    return line, shlex.split(done.stdout.strip().removeprefix(DRYRUN_PREFIX))
