"""The ``agentgw`` command: global options, error rendering, and the command groups."""

from __future__ import annotations

import sys

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

    Exit codes: 0 ok, 1 operation failed, 2 bad input, 3 verification failed / not aligned,
    4 locked by another operation.
    """
    configure(debug=debug)
    ctx.obj = App(layout=Layout.from_env(root), debug=debug)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group, print one ``error:`` line on failure, exit with its code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
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
