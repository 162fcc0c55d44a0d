"""agentgw_sandbox: run untrusted code in a microVM from a gateway, through the host's broker.

Installed by ``agentgw init`` as /opt/agent/_lib/agentgw_sandbox.py; standard library only, so a
gateway of any runtime can load it (from its path, without putting /opt/agent/_lib on sys.path)::

    result = agentgw_sandbox.run(["sh", "-c", "echo hi; exit 3"], stdin=b"", timeout=5)
    result["exit_code"], result["stdout"]          # 3, b"hi\\n"

It connects to /run/agentgw/sandbox/$AGENT_PROFILE.sock; the broker serves only the profile's
own user there (and root), identified by the kernel, so a gateway can use its own socket only.
Protocol (see agentgw.sandbox.protocol): one JSON line out -- argv, stdin and files as base64,
optional limits --, one JSON line back; ``{"ok": false, "error": KIND, ...}`` raises
SandboxError with that kind (``busy``, ``forbidden``, ``failed`` ...).
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

SOCKET_DIR = "/run/agentgw/sandbox"
SOCKET_ENV = "AGENTGW_SANDBOX_SOCKET"  # overrides the path (tests; a relocated host)
# With no timeout given, the broker applies the host's (at most an hour); boot and queue on top.
MAX_WAIT_S = 3600.0
MARGIN_S = 120.0

__all__ = ["SandboxError", "run", "socket_path"]


class SandboxError(Exception):
    """The broker refused or could not run the job. ``kind`` is the protocol's error kind;
    ``unreachable`` when there is no broker to ask."""

    def __init__(self, kind: str, message: str, hint: str = "") -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.hint = kind, message, hint


def socket_path(profile: str | None = None) -> str:
    override = os.environ.get(SOCKET_ENV)
    if override:
        return override
    name = profile or os.environ.get("AGENT_PROFILE", "")
    if not name:
        raise SandboxError("unreachable", "AGENT_PROFILE is not set and no profile was given")
    return f"{SOCKET_DIR}/{name}.sock"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render_request(
    argv: Sequence[str], stdin: bytes, files: Mapping[str, bytes] | None,
    timeout: float | None, memory_mb: int | None,
) -> bytes:
    if isinstance(argv, str | bytes):
        raise TypeError("argv must be a sequence of strings, not one string")
    request: dict[str, Any] = {"argv": list(argv), "stdin": _b64(stdin)}
    if files:
        request["files"] = {path: _b64(data) for path, data in files.items()}
    if timeout is not None:
        request["timeout_s"] = timeout
    if memory_mb is not None:
        request["memory_mb"] = memory_mb
    return json.dumps(request, separators=(",", ":")).encode() + b"\n"


def parse_response(line: bytes) -> dict[str, Any]:
    """The answer with stdout/stderr as bytes, or SandboxError for a failure answer."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise SandboxError("internal", f"the broker's answer is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise SandboxError("internal", "the broker's answer has no 'ok' field")
    if not data.pop("ok"):
        raise SandboxError(str(data.get("error", "internal")), str(data.get("message", "")),
                           str(data.get("hint", "")))
    for stream in ("stdout", "stderr"):
        data[stream] = base64.b64decode(data.get(stream) or "")
    return data


def run(
    argv: Sequence[str], stdin: bytes = b"", files: Mapping[str, bytes] | None = None,
    timeout: float | None = None, *, memory_mb: int | None = None, path: str | None = None,
) -> dict[str, Any]:
    """Run ``argv`` in a fresh microVM; return exit_code, stdout, stderr (bytes), timed_out,
    stdout_truncated, stderr_truncated, backend (kvm|tcg), warm, duration_s, detail and the
    limits it ran with. ``files`` maps paths relative to the job's directory to contents.

    Limits above the host's are lowered to them by the broker. Raises SandboxError when the
    broker refuses or fails, or cannot be reached."""
    line = render_request(argv, stdin, files, timeout, memory_mb)
    where = path or socket_path()
    wait = (timeout if timeout is not None else MAX_WAIT_S) + MARGIN_S
    chunks = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(wait)
            sock.connect(where)
            sock.sendall(line)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(1 << 20):
                chunks.append(chunk)
    except TimeoutError:
        raise SandboxError("timeout", f"no answer from the sandbox broker in {wait:g}s") from None
    except OSError as exc:
        raise SandboxError("unreachable", f"cannot use the sandbox broker at {where}: "
                           f"{exc.strerror or exc}",
                           "is agentgw-sandbox.service running?") from None
    answer = b"".join(chunks)
    if not answer:
        raise SandboxError("unreachable", "the sandbox broker closed the connection unanswered")
    return parse_response(answer.split(b"\n", 1)[0])
