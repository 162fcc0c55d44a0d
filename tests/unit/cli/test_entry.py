"""The console script's exit: statuses and output as with a normal exit, without teardown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentgw.cli.main import exit_status


def entry(*args: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys; sys.argv = ['agentgw', *{list(args)!r}]; " \
           "from agentgw.cli.main import run; run()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_version_prints_and_exits_0() -> None:
    proc = entry("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, "agentgw, version 0.1.0")


def test_bad_input_is_one_error_line_and_exit_2() -> None:
    proc = entry("no-such-command")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "hint: " in proc.stderr


def test_output_reaches_a_pipe_before_the_exit() -> None:
    """Everything written is flushed first: the same bytes as with Python's normal exit."""
    normal = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv = ['agentgw', '--help']; "
         "from agentgw.cli.main import main; main()"],
        capture_output=True, text=True, timeout=60)
    fast = entry("--help")
    assert (fast.returncode, fast.stdout) == (normal.returncode, normal.stdout)
    assert "Commands:" in fast.stdout


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), (256 + 4, 4)])
def test_exit_status_is_pythons(code: object, status: int) -> None:
    assert exit_status(code) == status


def test_a_text_exit_prints_it_and_is_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_status("stopped") == 1
    assert capsys.readouterr().err == "stopped\n"
