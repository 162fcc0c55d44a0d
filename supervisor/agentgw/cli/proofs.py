"""``agentgw verify``, ``agentgw attest verify`` and the ``onfailure`` hook command."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import click

from agentgw.cli.context import App, echo_json, etc_option, pass_app
from agentgw.config.load import load_config
from agentgw.errors import AgentgwError, Exit
from agentgw.model.proof import ProofRecord
from agentgw.observe.units import check_systemd_here

MARK = {"passed": "ok", "failed": "FAILED", "not-enforced": "NOT ENFORCED"}


def render_record(record: ProofRecord, path: Path) -> str:
    verdict = "ISOLATED" if record.isolated else "NOT ISOLATED"
    lines = [f"{record.profile}: {verdict} - {record.reason}  ({path})"]
    width = max(len(c.name) for c in record.checks)
    for check in record.checks:
        lines.append(f"  {MARK[check.result]:<12} {check.name:<{width}}  {check.reason}")
    return "\n".join(lines)


@click.command("verify")
@click.argument("profile", required=False)
@click.option(
    "--lifecycle",
    is_flag=True,
    help="First restart each profile and prove its siblings' MainPIDs unchanged.",
)
@etc_option()
@click.option("--json", "as_json", is_flag=True, help="Print the signed records as JSON.")
@pass_app
def verify(
    app: App, profile: str | None, lifecycle: bool, etc: Path | None, as_json: bool
) -> None:
    """Prove the isolation of PROFILE (default: every running profile) and write one signed
    record each to the state dir's proofs/.

    Probes run as the profile's user in a transient unit with the gateway's own sandbox
    properties. Exits 3 when a profile is not isolated (a check failed, the host cannot
    enforce a boundary, or convenience mode).
    """
    check_systemd_here()
    from agentgw.bus import Systemd
    from agentgw.proofs.verify import verify_profiles

    config = load_config(etc if etc is not None else app.layout.etc)

    def out(line: str) -> None:
        click.echo(line, err=as_json)

    with Systemd() as sd:
        done = verify_profiles(app.layout, config, sd, profile, lifecycle=lifecycle, out=out)
    if as_json:
        echo_json({"proofs": [v.record.model_dump(mode="json") for v in done]})
    elif done:
        click.echo("\n".join(render_record(v.record, v.path) for v in done))
    else:
        click.echo("no running profiles to verify")
    fail([v.record for v in done])


def fail(records: Sequence[ProofRecord]) -> None:
    bad = [r.profile for r in records if not r.isolated]
    if bad:
        raise AgentgwError(
            "not isolated: " + ", ".join(bad),
            hint="see the checks above; the records are in the state dir's proofs/",
            code=Exit.VERIFY,
        )


@click.group("attest")
def attest() -> None:
    """Check signed proof records."""


@attest.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--pubkey",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The host's public key (default: the state dir's host.key.pub).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def attest_verify(app: App, file: Path, pubkey: Path | None, as_json: bool) -> None:
    """Check that FILE is a proof record signed by the host key and unchanged since.

    Exits 3 on a bad signature, another signer, or an edited record.
    """
    from agentgw.proofs.record import attest_file, host_public_key_path

    key = pubkey if pubkey is not None else host_public_key_path(app.layout)
    result = attest_file(file, key)
    if as_json:
        echo_json({"file": os.fspath(file), **asdict(result)})
    elif result.ok:
        state = "isolated" if result.isolated else "NOT isolated"
        click.echo(f"{file}: {result.reason}; profile {result.profile} {state} at {result.time}")
    if not result.ok:
        raise AgentgwError(f"{file}: {result.reason}",
                           hint=f"checked against {key} (fingerprint {result.key_fingerprint})",
                           code=Exit.VERIFY)


@click.command("onfailure")
@click.argument("profile")
@etc_option()
@pass_app
def onfailure(app: App, profile: str, etc: Path | None) -> None:
    """Record that PROFILE's gateway failed (history; the webhook, if configured).

    Run by agentgw-onfailure@PROFILE.service, the template's OnFailure= hook.
    """
    from agentgw.proofs.onfailure import record_failure

    config = load_config(etc if etc is not None else app.layout.etc)
    event = record_failure(app.layout, config, profile, os.environ)
    click.echo(f"recorded failure of {event['unit']} ({event.get('service_result', 'unknown')})")
