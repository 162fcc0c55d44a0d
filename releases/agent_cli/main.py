"""``python -m agent_cli.main gateway run [--replace]``: the runtime's command line."""

from __future__ import annotations

import argparse

from agent_cli import gateway
from agent_cli.routes import gateway_routes


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="agent_cli", description="The demo agent runtime.")
    groups = top.add_subparsers(dest="group", required=True)
    gw = groups.add_parser("gateway", help="the profile's long-running gateway")
    commands = gw.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve AGENT_LISTEN until SIGTERM, then drain")
    run.add_argument(
        "--replace",
        action="store_true",
        help="stop a stale instance of this same profile (pid, start time and AGENT_HOME "
        "must match its pidfile) instead of refusing to start",
    )
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return gateway.run(gateway_routes, replace=args.replace)


if __name__ == "__main__":
    raise SystemExit(main())
