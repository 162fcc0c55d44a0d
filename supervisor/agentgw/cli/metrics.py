"""agentgw metrics: the registry's /metrics text, computed here, to stdout or to a file for
node_exporter's textfile collector."""

from __future__ import annotations

from pathlib import Path

import click

from agentgw.cli.context import App, etc_option, pass_app
from agentgw.errors import usage

TEXTFILE = "agentgw.prom"


@click.command("metrics")
@click.option("--textfile", "textfile", type=click.Path(path_type=Path), metavar="DIR",
              help=f"Write DIR/{TEXTFILE} atomically (node_exporter's "
              "--collector.textfile.directory) instead of printing.")
@etc_option("computes the figures here")
@pass_app
def metrics(app: App, textfile: Path | None, etc: Path | None) -> None:
    """Every profile's figures in Prometheus text format, as GET /metrics serves them to root:
    up, aligned, isolated, state, release, restarts, memory, proof age, promotes and sandbox
    execs by result, build info. Run it from a timer to feed node_exporter."""
    from agentgw.config.load import load_config
    from agentgw.fsio import write_atomic
    from agentgw.observe.counts import read_counts
    from agentgw.observe.status import status_now
    from agentgw.registry.metrics import render_metrics

    if textfile is not None and not textfile.is_dir():
        raise usage(f"{textfile}: no such directory",
                    hint="give node_exporter's --collector.textfile.directory")
    config = load_config(etc if etc is not None else app.layout.etc)
    text = render_metrics(status_now(app.layout, config),
                          read_counts(app.layout.history, app.layout.sandbox_execs))
    if textfile is None:
        click.echo(text, nl=False)
        return
    write_atomic(textfile / TEXTFILE, text, mode=0o644)
    click.echo(f"wrote {textfile / TEXTFILE}")
