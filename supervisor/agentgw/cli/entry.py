"""The ``agentgw`` console script: root's commands go to the pre-started CLI process when it runs
(agentgw-cli.socket, :mod:`agentgw.cli.forkserver`), everything else runs here.

A fresh Python spends ~150-250 ms importing click, pydantic, PyYAML, psutil and pystemd before a
command does anything; for ``promote`` that is most of its cost over a bare ``systemctl
restart`` (bench_control's rows "promote overhead ..."). The fork server imported them once;
per command it forks a child that runs :func:`agentgw.cli.main.run` exactly as this process
would, with this process's argv, environment, working directory, umask and stdin/stdout/stderr
(passed as file descriptors). This process waits and exits with the child's status; a signal it
gets (Ctrl-C, SIGTERM) is passed on, and if it dies the child is killed (as a kill -9 of the
command would have done).

Only with the standard library: this module is all a handed-off command imports here.

Handed off only when all hold (else the command runs here, as always):

- the caller is root (non-root callers are re-run through sudo, see :mod:`agentgw.cli.day2`);
- the command is one of :data:`SERVED` (non-interactive, latency-bound);
- ``$AGENTGW_CLI_FORK`` is not ``0``;
- /run/agentgw/cli.sock accepts, and the server runs this same installation (same
  ``sys.prefix`` and package directory, no file of it changed since it started): otherwise it
  declines and the command runs here.

Once the server said ``started``, the command is never run a second time here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from typing import NoReturn

SOCKET = "/run/agentgw/cli.sock"  # paths.Layout("/").cli_socket (a unit test pins it)
OFF_ENV = "AGENTGW_CLI_FORK"
SERVED = frozenset({"promote", "rollback", "restart", "start", "stop", "status", "history"})
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
MAX_HEADER = 1 << 20
LENGTH = struct.Struct("!I")


def command_of(args: list[str]) -> str | None:
    """The command name in ``args`` after the global options (--debug, --root DIR), or None
    when anything else comes first (--help, --version, an unknown option)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--debug" or arg.startswith("--root="):
            i += 1
        elif arg == "--root":
            i += 2
        elif arg.startswith("-"):
            return None
        else:
            return arg
    return None


def eligible(args: list[str], environ: dict[str, str] | os._Environ[str], euid: int) -> bool:
    return euid == 0 and command_of(args) in SERVED and environ.get(OFF_ENV, "1") != "0"


def installation() -> dict[str, str]:
    """What identifies the code that would run the command: the server must be the same."""
    import agentgw

    return {"prefix": sys.prefix, "package": os.path.dirname(os.path.abspath(agentgw.__file__))}


def encode_header(argv: list[str], cwd: str, environ: dict[str, str], umask: int) -> bytes:
    body = json.dumps({"argv": argv, "cwd": cwd, "env": environ, "umask": umask,
                       **installation()}).encode()
    return LENGTH.pack(len(body)) + body


def decode_status(line: bytes) -> tuple[str, int] | None:
    """``exit N`` or ``signal N`` (the server's last line), else None."""
    kind, _, number = line.decode(errors="replace").strip().partition(" ")
    if kind in ("exit", "signal") and number.isdigit():
        return kind, int(number)
    return None


def handoff(path: str = SOCKET) -> int | None:
    """Run this process's command in the fork server; its exit status, or None when the server
    is absent or declined (nothing ran: the caller runs the command itself)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lines = conn.makefile("rb")  # one line at a time: "started" and the status may come together
    try:
        conn.connect(path)
        umask = os.umask(0o022)
        os.umask(umask)
        header = encode_header(sys.argv, os.getcwd(), dict(os.environ), umask)
        socket.send_fds(conn, [header], [0, 1, 2])
        started = lines.readline() == b"started\n"
    except OSError:  # no server, a closed stdin/stdout (EBADF), a deleted cwd
        started = False
    if not started:
        lines.close()
        conn.close()
        return None

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            conn.send(bytes([signum]))

    for signum in FORWARDED:
        signal.signal(signum, forward)
    status = decode_status(lines.readline())
    if status is None:
        sys.stderr.write("error: the agentgw CLI fork server ended before the command did "
                         "(its outcome is unknown)\nhint: see 'agentgw status' and "
                         "'journalctl -u agentgw-cli.service'; the next command repairs an "
                         "interrupted operation\n")
        return 1
    kind, number = status
    if kind == "signal":
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        return 128 + number
    return number


def run() -> NoReturn:
    """The console script (pyproject's ``agentgw``)."""
    if eligible(sys.argv[1:], os.environ, os.geteuid()):
        status = handoff()
        if status is not None:
            os._exit(status)
    from agentgw.cli.main import run as run_here

    run_here()
