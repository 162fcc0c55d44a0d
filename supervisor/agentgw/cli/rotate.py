"""agentgw rotate: the size-bounded rotation of the history and the sandbox's exec records."""

from __future__ import annotations

from pathlib import Path

import click

from agentgw.cli.context import App, echo_json, etc_option, pass_app


@click.command("rotate")
@etc_option("rotation.max_bytes and rotation.keep are read there")
@click.option("--json", "as_json", is_flag=True, help="Print what was rotated as JSON.")
@pass_app
def rotate(app: App, etc: Path | None, as_json: bool) -> None:
    """Rotate history.jsonl and the sandbox's execs.jsonl once over rotation.max_bytes
    (agentgw.yaml), keeping rotation.keep old files each; finish a rotation a kill interrupted.
    agentgw-verify.service runs it before every verify. Safe to run at any time."""
    from agentgw.apply.history import rotate_history
    from agentgw.config.load import load_config
    from agentgw.sandbox.records import rotate_records

    config = load_config(etc if etc is not None else app.layout.etc)
    retention = config.host.rotation.retention()
    done = {
        str(app.layout.history): rotate_history(app.layout.history, retention),
        str(app.layout.sandbox_execs): rotate_records(app.layout, retention),
    }
    if as_json:
        echo_json({"rotated": done, "max_bytes": retention.max_bytes, "keep": retention.keep})
        return
    for path, rotated in done.items():
        click.echo(f"{path}: {'rotated' if rotated else 'under the bound'}")
