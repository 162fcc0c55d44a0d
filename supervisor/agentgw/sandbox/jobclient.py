"""The broker's side of sandbox jobs: one agentgw-job@ unit per job (see :mod:`.jobunit`),
gVisor or QEMU microVM alike.

The broker's unit is hardened so that it cannot start runsc (no user namespaces, no mounts, no
ptrace), and it should not: every job would then run as the broker's user, beside every other
job and the sockets. So systemd starts each job. ``agentgw-job.socket`` listens on
``/run/agentgw/sandbox-job.sock`` (0660 root:agentgw-sandbox: only the broker connects) with
``Accept=yes``: every connection is one instance of agentgw-job@.service, a DynamicUser of its
own (``User=agj%i``: the instance name holds the connection's number, so no two jobs share a
uid), a private /tmp where its files are written, no network, and its own memory, task, CPU and
run-time limits.

The broker has authorised and validated the request. It sends a prepare line (the backend and
the sandbox's shape: a microVM's ``-m`` is the request's memory_mb) and then the request whole
(every field, so the job unit needs no defaults of its own); the unit answers a ready line once
its sandbox waits (a VM has booted), then the answer, which the broker reads as its own.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from agentgw.errors import die
from agentgw.sandbox import gvisor
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.jobspec import Prepare, parse_ready, render_prepare
from agentgw.sandbox.protocol import parse_response
from agentgw.sandbox.vm import BOOT_BUDGET_S, job_window

SOCKET = "run/agentgw/sandbox-job.sock"
UNIT = "agentgw-job.socket"
SLACK_S = 30.0  # beyond the job's timeout: the unit's start, runsc's start and teardown
VM_SLACK_S = 10.0  # beyond a VM's boot budget and job window: the unit's start and teardown


def socket_path(root: Path = Path("/")) -> Path:
    return root / SOCKET


def unavailable(path: Path, *, backend: str = "gvisor") -> str:
    """'' when the job socket is there to connect to; otherwise why ``backend`` cannot be used."""
    if backend == "gvisor" and gvisor.runsc_path() is None:
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


def render_lines(request: JobRequest, backend: str) -> bytes:
    """The prepare line and the request line of one cold job."""
    spec = Prepare(backend=backend, memory_mb=request.memory_mb, cpus=request.cpus,
                   nproc=request.nproc)
    return render_prepare(spec) + request.model_dump_json().encode() + b"\n"


def parse_answer(answer: bytes) -> JobResult:
    """The ready line then the answer line -> the result; a failure line (the unit could not
    prepare, or the job failed) raises its error."""
    if not answer:
        raise die("the job unit closed the connection without an answer",
                  hint="see: journalctl -u 'agentgw-job@*'")
    first, _, rest = answer.partition(b"\n")
    try:
        parse_ready(first)
    except ValueError:
        parse_response(first)  # a failure line raises its own error
        raise die("the job unit answered before its sandbox was ready") from None
    result, _ = parse_response(rest.split(b"\n", 1)[0])
    return result


def wait_for(request: JobRequest, backend: str) -> float:
    """How long the broker waits for a job unit's answer."""
    if backend in BOOT_BUDGET_S:
        return BOOT_BUDGET_S[backend] + job_window(request) + VM_SLACK_S
    return request.timeout_s + SLACK_S


def runner(path: Path, backend: str = "gvisor") -> Callable[[JobRequest], JobResult]:
    """Run a job in a fresh agentgw-job@ unit on ``backend`` (gvisor, kvm or tcg; blocking,
    the broker calls it on a worker)."""

    def run(request: JobRequest) -> JobResult:
        try:
            answer = exchange(path, render_lines(request, backend), wait_for(request, backend))
        except OSError as exc:
            raise die(f"cannot reach the job socket {path}: {exc.strerror or exc}",
                      hint=f"systemctl enable --now {UNIT}") from None
        return parse_answer(answer)

    return run
