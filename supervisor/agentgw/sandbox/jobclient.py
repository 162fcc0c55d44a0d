"""The broker's side of gVisor jobs: one agentgw-job@ unit per job (see :mod:`.jobunit`).

The broker's unit is hardened so that it cannot start runsc (no user namespaces, no mounts, no
ptrace), and it should not: every job would then run as the broker's user, beside every other
job and the sockets. So systemd starts each job. ``agentgw-job.socket`` listens on
``/run/agentgw/sandbox-job.sock`` (0660 root:agentgw-sandbox: only the broker connects) with
``Accept=yes``: every connection is one instance of agentgw-job@.service, a DynamicUser of its
own (``User=agj%i``: the instance name holds the connection's number, so no two jobs share a
uid), a private /tmp where its files are written, no network, and its own memory, task, CPU and
run-time limits.

The broker has authorised and validated the request; it sends it whole (every field, so the
job unit needs no defaults of its own) and reads the answer as it reads its own.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from agentgw.errors import die
from agentgw.sandbox import gvisor
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.protocol import parse_response

SOCKET = "run/agentgw/sandbox-job.sock"
UNIT = "agentgw-job.socket"
SLACK_S = 30.0  # beyond the job's timeout: the unit's start, runsc's start and teardown


def socket_path(root: Path = Path("/")) -> Path:
    return root / SOCKET


def unavailable(path: Path) -> str:
    """'' when the job socket is there to connect to; otherwise why gVisor cannot be used."""
    if gvisor.runsc_path() is None:
        return "runsc (gVisor) is not installed"
    if not path.is_socket():
        return f"{UNIT} is not listening ({path} is missing; systemctl enable --now {UNIT})"
    return ""


def exchange(path: Path, line: bytes, wait_s: float) -> bytes:
    """Send one line, read the answer until the job unit closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(wait_s)
        sock.connect(os.fspath(path))
        sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def runner(path: Path) -> Callable[[JobRequest], JobResult]:
    """Run a job in a fresh agentgw-job@ unit (blocking; the broker calls it on a worker)."""

    def run(request: JobRequest) -> JobResult:
        try:
            answer = exchange(path, request.model_dump_json().encode() + b"\n",
                              request.timeout_s + SLACK_S)
        except OSError as exc:
            raise die(f"cannot reach the job socket {path}: {exc.strerror or exc}",
                      hint=f"systemctl enable --now {UNIT}") from None
        if not answer:
            raise die("the job unit closed the connection without an answer",
                      hint="see: journalctl -u 'agentgw-job@*'")
        result, _ = parse_response(answer.split(b"\n", 1)[0])
        return result

    return run
