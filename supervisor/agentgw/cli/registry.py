"""``agentgw registry serve``: the read-only registry endpoint (run by agentgw-registry.service)."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from agentgw.cli.context import App, etc_option, pass_app
from agentgw.config.load import load_config
from agentgw.errors import usage
from agentgw.model.fields import LISTEN_HINT, Listen
from agentgw.registry.serve import read_token, serve


@click.group("registry")
def registry() -> None:
    """The read-only registry: profiles, proofs, releases, sandbox, metrics (GET/HEAD only)."""


def _listen(text: str) -> Listen:
    try:
        return Listen.model_validate(text)
    except ValidationError as exc:
        ctx = exc.errors()[0].get("ctx") or {}
        raise usage(f"--tcp {text}: {ctx.get('message', 'invalid')}", hint=LISTEN_HINT) from None


@registry.command("serve")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Unix socket to serve on [default: ROOT/run/agentgw/registry.sock when "
    "registry.socket is true].",
)
@click.option(
    "--tcp",
    default=None,
    metavar="HOST:PORT",
    help="Also serve on this loopback address [default: registry.tcp]; needs "
    "registry.token_file.",
)
@etc_option()
@pass_app
def serve_command(
    app: App, socket_path: Path | None, tcp: str | None, etc: Path | None
) -> None:
    """Serve until SIGTERM. Callers on the socket are identified by SO_PEERCRED: root and the
    admin group see every profile, agent-<p> sees only <p>, anyone else gets 403. TCP callers
    need the bearer token. Tells systemd when ready (Type=notify).
    """
    etc = etc if etc is not None else app.layout.etc
    config = load_config(etc)
    settings = config.host.registry
    if socket_path is None and settings.socket:
        socket_path = app.layout.registry_socket
    listen = _listen(tcp) if tcp is not None else settings.tcp
    token = read_token(settings.token_file) if settings.token_file is not None else None
    serve(app.layout, etc=etc, socket_path=socket_path, tcp=listen, token=token)
