"""The ``agentgw`` command: global options, error rendering, and the command groups."""

from __future__ import annotations

import gc
import os
import sys
from typing import NoReturn

import click

from agentgw import __version__
from agentgw.cli import commands
from agentgw.cli.context import App
from agentgw.errors import AgentgwError, Exit
from agentgw.log import configure
from agentgw.paths import ROOT_ENV, Layout


class LazyGroup(click.Group):
    """Lists commands from the table; imports a command's module only when it runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return commands.names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return commands.load(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, commands.short_help(name)) for name in commands.names()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agentgw")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=str),
    envvar=ROOT_ENV,
    default="/",
    show_default=True,
    help=f"Relocate every host path under this directory (also ${ROOT_ENV}).",
)
@click.option("--debug", is_flag=True, help="Log debug events and show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, root: str, debug: bool) -> None:
    """Supervise AI-agent gateways, one hardened systemd instance per profile.

    Exit codes: 0 ok, 1 operation failed, 2 bad input or not allowed, 3 verification failed /
    not aligned, 4 locked by another operation.

    Without root, members of the admin group (admin_group, default agentgw) run promote,
    rollback, restart, status, history, logs and verify: agentgw re-runs them through sudo
    (README: 'Day-2 without root').

    With agentgw-cli.socket enabled, root's promote, rollback, restart, start, stop, status and
    history run in a child of the CLI fork server, which imported them once (same output and
    exit code; README: 'The CLI fork server'). AGENTGW_CLI_FORK=0 runs them here.
    """
    gc.enable()  # off while the command's modules were imported: see run()
    configure(debug=debug)
    ctx.obj = App(layout=Layout.from_env(root), debug=debug)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group, print one ``error:`` line on failure, exit with its code."""
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        if os.geteuid() != 0:
            from agentgw.cli.day2 import check_caller

            check_caller(args)
        # standalone_mode=False returns a command's sys.exit/ctx.exit code instead of exiting.
        rv = cli.main(args=argv, prog_name="agentgw", standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except AgentgwError as exc:
        if debug:
            import traceback  # only with --debug: it costs ~25 ms at start-up

            traceback.print_exc()
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(int(exc.code))
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if debug:
            import traceback  # only with --debug: it costs ~25 ms at start-up

            traceback.print_exc()
        message = exc.format_message().replace("\n", " ")
        click.echo(f"error: {message}", err=True)
        click.echo("hint: see 'agentgw --help' or 'agentgw COMMAND --help'", err=True)
        sys.exit(Exit.USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)


def exit_status(code: object) -> int:
    """The process exit status Python gives ``sys.exit(code)`` (a text is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run() -> NoReturn:
    """The ``agentgw`` console script: :func:`main`, then exit without tearing the interpreter
    down.

    Finalising the ~300 modules a command imports costs 15-20 ms of every command (measured:
    importing what promote imports takes 205 ms with the normal exit, 187 ms with this one).
    Nothing is owed to that teardown: every ``with`` block and ``finally`` of the command ran
    inside :func:`main`, and output and logging are flushed here. Tests call :func:`main` and
    get ``SystemExit`` as usual.

    Start-up trick (STYLE.md), the only ``os._exit`` after a command. Benchmark row:
    bench_control's "agentgw status --json, 100 profiles (registry)" (and the promote
    overhead rows). Pinned by tests/unit/test_startup_hacks.py (status and output unchanged).

    The second, in the same place: the cyclic garbage collector is off while the command's
    modules are imported (~300 modules and their classes: the collector ran over that growing
    heap again and again, ~14 ms of ~270 ms; nothing those imports make is garbage), and on
    again (``cli()``, which click calls after it resolved the command) before the command
    runs, so a daemon (registry, broker) collects as usual. Same benchmark rows; pinned by
    tests/unit/test_startup_hacks.py (the command runs with the collector on).
    """
    gc.disable()
    try:
        main()
        status = 0
    except SystemExit as exc:
        status = exit_status(exc.code)
    if "logging" in sys.modules:
        import logging

        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (agentgw status | head): nothing to add
            pass
    os._exit(status)
