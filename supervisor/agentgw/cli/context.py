"""What every command receives: the host layout and output preferences."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click

from agentgw.paths import Layout


@dataclass(frozen=True)
class App:
    layout: Layout
    debug: bool


pass_app = click.make_pass_decorator(App)


def echo_json(data: Any) -> None:
    """Print one JSON document to stdout (the ``--json`` form of every read command)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
