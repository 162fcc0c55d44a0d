"""What every command receives: the host layout and output preferences."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from agentgw.machine import stamp
from agentgw.paths import Layout


@dataclass(frozen=True)
class App:
    layout: Layout
    debug: bool


pass_app = click.make_pass_decorator(App)

F = TypeVar("F", bound=Callable[..., Any])


def etc_option(note: str = "") -> Callable[[F], F]:
    """``--etc DIR``, the config directory every config-reading command takes."""
    return click.option(
        "--etc",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Config directory [default: ROOT/etc/agentgw]" + (f"; {note}" if note else "") + ".",
    )


def echo_json(data: dict[str, Any]) -> None:
    """Print one JSON document to stdout (the ``--json`` form of every command), with its
    schema version and the host's identity (machine-id, hostname)."""
    click.echo(json.dumps(stamp(data), indent=2, sort_keys=True, default=str))
