"""The one way unit tests run the ``agentgw`` command in process: click's CliRunner isolation
around the real entry point (:func:`agentgw.cli.main.main`), so the ``error:``/``hint:``
rendering and the exit codes are the ones a user gets."""

from __future__ import annotations

from click.testing import CliRunner

from agentgw.cli.main import main


def agentgw(*argv: str, stdin: str | bytes | None = None) -> tuple[int, str, str]:
    """Run ``agentgw ARGV``; its exit code, stdout and stderr."""
    code: object = 0
    with CliRunner().isolation(input=stdin) as (out, err, _):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code
    status = code if isinstance(code, int) else 0 if code is None else 1
    return status, out.getvalue().decode(), err.getvalue().decode()
