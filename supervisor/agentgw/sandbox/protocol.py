"""The broker's wire format: one JSON request line in, one JSON response line out, per connection.

Request (UTF-8 JSON object, ended by ``\\n``; at most ``MAX_REQUEST_BYTES``)::

    {"argv": ["sh", "-c", "echo hi"],      required, 1+ strings, no NUL
     "stdin": "<base64>",                   optional, default empty
     "files": {"in/data.bin": "<base64>"},  optional, paths relative to the job's cwd, no '..'
     "timeout_s": 5, "memory_mb": 256,      optional; absent means the host's limit, larger
     "cpus": 1, "max_output": 65536,        values are lowered to it (never refused)
     "nproc": 128}                          optional, processes inside the VM

Response, success::

    {"ok": true, "exit_code": 3, "stdout": "<base64>", "stderr": "<base64>",
     "stdout_truncated": false, "stderr_truncated": false, "timed_out": false,
     "backend": "kvm" | "tcg", "warm": true, "duration_s": 1.2, "detail": "",
     "limits": {"timeout_s": 5.0, "memory_mb": 256, "cpus": 1, "max_output": 65536}}

Response, failure (the connection is closed after it)::

    {"ok": false, "error": KIND, "message": "...", "hint": "..."}

with KIND one of ``forbidden`` (the peer is not agent-<p> or root), ``busy`` (the profile's or
the host's concurrency limit stayed full for the queue wait), ``bad_request``, ``too_large``,
``timeout`` (no complete request line in time), ``failed`` (the VM did not produce a result),
``unavailable`` (the broker is stopping) and ``internal``.

A job that exits non-zero, is killed at its timeout or has its output cut is a success of the
protocol: ``exit_code``, ``timed_out`` and ``*_truncated`` say what happened to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, Unpack, cast, get_args

from pydantic import ValidationError

from agentgw.errors import AgentgwError, die
from agentgw.model.host import Sandbox
from agentgw.sandbox.job import MAX_INPUT_BYTES, JobRequest, JobResult

# base64 of the largest stdin + files, plus room for argv and JSON escaping
MAX_REQUEST_BYTES = MAX_INPUT_BYTES * 4 // 3 + 2 * 1024 * 1024
REQUEST_FIELDS = frozenset(
    {"argv", "stdin", "files", "timeout_s", "memory_mb", "cpus", "max_output", "nproc"}
)
ErrorKind = Literal[
    "forbidden", "busy", "bad_request", "too_large", "timeout", "failed", "unavailable",
    "internal",
]
ERROR_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))


class BrokerError(AgentgwError):
    """A failure response: its ``kind`` travels on the wire, message and hint with it."""

    def __init__(self, kind: ErrorKind, message: str, *, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.kind = kind


@dataclass(frozen=True)
class Limits:
    """What a job actually got after clamping to the host's sandbox limits."""

    timeout_s: float
    memory_mb: int
    cpus: int
    max_output: int


def host_limits(sandbox: Sandbox) -> Limits:
    return Limits(
        timeout_s=float(sandbox.timeout_s),
        memory_mb=sandbox.memory_mb,
        cpus=sandbox.vcpus,
        max_output=sandbox.max_output_bytes,
    )


def _clamp(data: Mapping[str, Any], host: Limits) -> dict[str, Any]:
    """Absent limits become the host's, larger ones are lowered to it. Values of the wrong type
    are left alone for JobRequest's validation to reject with a clear message."""
    out: dict[str, Any] = {}
    for name, ceiling in asdict(host).items():
        value = data.get(name)
        if isinstance(value, bool):  # pydantic would read true as 1
            raise BrokerError("bad_request", f"{name}: must be a number, not {value!r}")
        if value is None:
            out[name] = ceiling
        elif isinstance(value, int | float) and value > ceiling:
            out[name] = ceiling
        else:
            out[name] = value
    return out


def parse_request(line: bytes, host: Limits) -> JobRequest:
    """A request line -> a validated JobRequest within the host's limits (or BrokerError)."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise BrokerError("bad_request", f"the request is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BrokerError("bad_request", "the request must be a JSON object")
    unknown = sorted(set(data) - REQUEST_FIELDS)
    if unknown:
        raise BrokerError("bad_request", f"unknown request fields: {', '.join(unknown)}",
                          hint=f"the fields are: {', '.join(sorted(REQUEST_FIELDS))}")
    merged = {**data, **_clamp(data, host)}
    try:
        # JSON mode, so stdin and files are read as base64 (the model's val_json_bytes).
        return JobRequest.model_validate_json(json.dumps(merged))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise BrokerError("bad_request", f"{where}: {first['msg']}") from None


def limits_of(request: JobRequest) -> Limits:
    return Limits(request.timeout_s, request.memory_mb, request.cpus, request.max_output)


def render_result(result: JobResult, request: JobRequest) -> bytes:
    body = json.loads(result.model_dump_json())
    return _line({"ok": True, **body, "limits": asdict(limits_of(request))})


def render_error(kind: ErrorKind, message: str, hint: str = "") -> bytes:
    return _line({"ok": False, "error": kind, "message": message, "hint": hint})


def _line(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def render_request(request: JobRequest) -> bytes:
    """The request line for ``request``, with only the fields that were set: a limit the caller
    did not choose is left to the broker (the host's)."""
    return request.model_dump_json(exclude_unset=True).encode() + b"\n"


def parse_response(line: bytes) -> tuple[JobResult, Limits]:
    """A response line -> (result, the limits it ran with); a failure response raises
    BrokerError with its kind, message and hint."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise die(f"the sandbox broker answered something that is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise die("the sandbox broker's answer has no 'ok' field")
    if not data["ok"]:
        kind = data.get("error")
        known = cast(ErrorKind, kind if kind in ERROR_KINDS else "internal")
        raise BrokerError(known, str(data.get("message") or kind),
                          hint=str(data.get("hint") or ""))
    data.pop("ok")
    limits = data.pop("limits", None)
    try:
        result = JobResult.model_validate_json(json.dumps(data))
        used = Limits(**limits) if isinstance(limits, dict) else None
    except (ValidationError, TypeError) as exc:
        raise die(f"the sandbox broker's answer is malformed: {exc}") from None
    if used is None:
        raise die("the sandbox broker's answer has no limits")
    return result, used


def call(path: str | os.PathLike[str], request: JobRequest, *, wait_s: float | None = None
         ) -> tuple[JobResult, Limits]:
    """Send one request to a broker socket and wait for its answer (blocking).

    ``wait_s`` bounds the whole exchange; OSError (no socket, refused) reaches the caller, which
    knows whether a missing broker is an error or a reason to fall back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(wait_s)
        sock.connect(os.fspath(path))
        sock.sendall(render_request(request))
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    answer = b"".join(chunks)
    if not answer:
        raise die("the sandbox broker closed the connection without an answer",
                  hint="see: journalctl -u agentgw-sandbox")
    return parse_response(answer.split(b"\n", 1)[0])


def argv_digest(argv: Sequence[str]) -> str:
    """sha256 of the argv, each argument followed by NUL (unambiguous: argv holds no NUL).
    Records keep this instead of the argv, which may carry secrets."""
    h = hashlib.sha256()
    for arg in argv:
        h.update(arg.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


class Outcome(TypedDict, total=False):
    """How a job ended, for :func:`render_record`: its ``result``, or (None) the ``error``
    that says why there is none and the ``duration_s`` until then; ``now`` is the record's
    time (default: the clock); ``pool`` the pool's stats after the job, if there is one."""

    result: JobResult | None
    error: str
    duration_s: float
    now: datetime | None
    pool: Mapping[str, Any] | None


def render_record(
    *, profile: str, uid: int, argv: Sequence[str], via: Literal["broker", "direct"],
    **outcome: Unpack[Outcome],
) -> bytes:
    """One line of ``execs.jsonl``: who ran what (by digest), how long, how it ended, on what."""
    result, error = outcome.get("result"), outcome.get("error", "")
    duration_s, now = outcome.get("duration_s", 0.0), outcome.get("now")
    record: dict[str, Any] = {
        "time": (now or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        "profile": profile,
        "uid": uid,
        "via": via,
        "argv_sha256": argv_digest(argv),
        "duration_s": round(result.duration_s if result is not None else duration_s, 4),
        "exit_code": result.exit_code if result is not None else None,
        "timed_out": result.timed_out if result is not None else False,
        "backend": result.backend if result is not None else None,
        "warm": result.warm if result is not None else False,
    }
    if result is not None and result.memory is not None:
        record["memory"] = result.memory.model_dump()  # a gVisor job's unit limit (jobmem)
    if error:
        record["error"] = error
    if (pool := outcome.get("pool")) is not None:
        record["pool"] = dict(pool)  # the broker's pool of prepared sandboxes, after this job
    return _line(record)
