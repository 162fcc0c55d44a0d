"""gVisor jobs for the broker, each in a unit of its own: agentgw-job@.service.

The broker's unit is hardened so that it cannot start runsc (no user namespaces, no mounts, no
ptrace), and it should not: every job would then run as the broker's user, beside every other
job and the sockets. So systemd starts each job. ``agentgw-job.socket`` listens on
``/run/agentgw/sandbox-job.sock`` (0660 root:agentgw-sandbox: only the broker connects) with
``Accept=yes``: every connection is one instance of agentgw-job@.service, a DynamicUser of its
own (``User=agj%i``: the instance name holds the connection's number, so no two jobs share a
uid), a private /tmp where its files are written, no network, and its own memory, task, CPU and
run-time limits. It runs ``agentgw sandbox job``: one request line in, runsc ``--rootless``,
one answer line out, in the broker's wire format (:mod:`agentgw.sandbox.protocol`).

The broker is the client (``runner``): it has already authorised and validated the request;
the job unit parses it again, in its own process, with the same model.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from agentgw.errors import AgentgwError, die
from agentgw.sandbox import gvisor
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.protocol import call, render_error, render_result

SOCKET = "run/agentgw/sandbox-job.sock"
UNIT = "agentgw-job.socket"
SLACK_S = 30.0  # beyond the job's timeout: runsc start and teardown, the unit's start


def socket_path(root: Path = Path("/")) -> Path:
    return root / SOCKET


def unavailable(path: Path) -> str:
    """'' when the job socket is there to connect to; otherwise why gVisor cannot be used."""
    if gvisor.runsc_path() is None:
        return "runsc (gVisor) is not installed"
    if not path.is_socket():
        return f"{UNIT} is not listening ({path} is missing; systemctl enable --now {UNIT})"
    return ""


def runner(path: Path) -> Callable[[JobRequest], JobResult]:
    """Run a job in a fresh agentgw-job@ unit (blocking; the broker calls it on a worker)."""

    def run(request: JobRequest) -> JobResult:
        try:
            result, _ = call(path, request, wait_s=request.timeout_s + SLACK_S)
        except OSError as exc:
            raise die(f"cannot reach the job socket {path}: {exc.strerror or exc}",
                      hint=f"systemctl enable --now {UNIT}") from None
        return result

    return run


def serve_one(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """``agentgw sandbox job``: one request line from the broker, one answer line back."""
    line = stdin.readline()
    try:
        request = JobRequest.model_validate_json(line)
    except ValidationError as exc:
        first = exc.errors()[0]
        stdout.write(render_error("bad_request", f"the job unit could not read the request: "
                                                 f"{first['msg']}"))
        return 2
    try:
        result = gvisor.run_job(request)
    except AgentgwError as exc:
        stdout.write(render_error("failed", exc.message, exc.hint))
        return 1
    stdout.write(render_result(result, request))
    stdout.flush()
    return 0


def main() -> int:
    """Entry point of the job unit (stdin and stdout are the connection)."""
    os.umask(0o077)
    return serve_one(sys.stdin.buffer, sys.stdout.buffer)
