"""A sandbox job as plain data, on the standard library only, and its wire lines.

Speed trick (one place): the gVisor job unit (agentgw-job@.service) is a new process per job,
and importing pydantic with the models of :mod:`agentgw.sandbox.job` took ~0.3 s of its ~0.6 s
there (README, "gVisor exec through the broker"). So the job unit reads its request and writes
its answer with this module only, in the same JSON as :mod:`agentgw.sandbox.protocol`. The broker
validated the request before (``protocol.parse_request``); this checks the shape again.
``tests/unit/sandbox/test_jobspec.py`` pins that both sides read each other's lines.

A connection to a job unit carries, in order: a *prepare* line (:class:`Prepare`: the backend
and the shape of the sandbox to build), the unit's *ready* line once that sandbox waits for a
job (or a failure line), the *job* line (the request), and the *answer* line. The broker keeps
connections that answered ready (its pool, :mod:`agentgw.sandbox.units`) and sends a job on one
when a request fits; a cold job is the same exchange with the job line sent right after prepare.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentgw.errors import AgentgwError

MiB = 1024 * 1024
TIMED_OUT_EXIT = 124  # what timeout(1) returns, so scripts already understand it


def check_relative_path(path: str) -> str:
    """A file name inside the job's working directory: relative, normalised, no ``..``."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\0" in path
        or any(p in ("", ".", "..") for p in parts)
        or posixpath.normpath(path) != path
    ):
        raise ValueError(f"file path must be relative and normalised, without '..': {path!r}")
    return path


@dataclass(frozen=True)
class Job:
    """What a backend needs of a request (defaults: JobRequest's)."""

    argv: tuple[str, ...]
    stdin: bytes = b""
    files: Mapping[str, bytes] = field(default_factory=dict)
    timeout_s: float = 10.0
    memory_mb: int = 256
    cpus: int = 1
    max_output: int = MiB
    nproc: int = 128


@dataclass(frozen=True)
class Outcome:
    """What came back from one run (JobResult's fields but backend and warm)."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    duration_s: float
    detail: str = ""


class NotStarted(AgentgwError):
    """The prepared sandbox ended before its job started: the job may run elsewhere (the
    unit answers ``unavailable``, and the broker runs the job cold)."""


@dataclass(frozen=True)
class Prepare:
    """The sandbox a job unit builds before it has a job: backend and shape."""

    backend: str
    memory_mb: int = 256
    cpus: int = 1
    nproc: int = 128


def fits(spec: Prepare, job: Job) -> bool:
    """Whether ``job`` may run in a sandbox prepared as ``spec`` (same shape)."""
    return (job.memory_mb, job.cpus, job.nproc) == (spec.memory_mb, spec.cpus, spec.nproc)


def oom_kills(text: str) -> int:
    """The OOM kills a cgroup counted: the ``oom_kill`` line of its ``memory.events`` (cgroup2)
    or ``memory.oom_control`` (v1); 0 when there is none."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


OOM_DETAIL = ("killed: the job's unit reached its memory limit (its MemoryMax=: for gVisor the "
              "request's memory_mb plus the sandbox's own)")


def render_prepare(p: Prepare) -> bytes:
    body = {"prepare": {"backend": p.backend, "memory_mb": p.memory_mb, "cpus": p.cpus,
                        "nproc": p.nproc}}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def parse_prepare(line: bytes) -> Prepare:
    """A prepare line -> Prepare, or ValueError saying what is wrong."""
    data = json.loads(line)
    body = data.get("prepare") if isinstance(data, dict) else None
    if not isinstance(body, dict):
        raise ValueError('a prepare line {"prepare": {...}} expected')
    backend = body.get("backend")
    if not isinstance(backend, str) or not backend:
        raise ValueError("prepare.backend: a backend name expected")
    shape = {name: _number(body, name, int) for name in ("memory_mb", "cpus", "nproc")}
    return Prepare(backend=backend, **shape)


def render_ready(backend: str, prepare_s: float, unit: str = "") -> bytes:
    """The job unit's line once its sandbox waits for a job; ``unit`` its own unit's name (the
    broker sets its memory limit by it: :mod:`agentgw.sandbox.jobmem`)."""
    body = {"ready": {"backend": backend, "prepare_s": round(prepare_s, 4), "unit": unit}}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def cgroup_paths(text: str) -> dict[str, str]:
    """A process's ``/proc/<pid>/cgroup``: each hierarchy's controllers (``""`` for cgroup2's
    ``0::`` line, ``memory``, ``name=systemd`` ...) -> the process's cgroup in it."""
    paths = {}
    for line in text.splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        paths[controllers] = path
    return paths


def unit_of_cgroup(text: str) -> str:
    """The service a process runs in, from its ``/proc/self/cgroup``; '' when in none. The
    cgroup2 line (``0::``) or, on a v1-only host, systemd's own hierarchy names it."""
    paths = cgroup_paths(text)
    for controllers in ("", "name=systemd"):
        name = paths.get(controllers, "").rsplit("/", 1)[-1]
        if name.endswith(".service"):
            return name
    return ""


def parse_ready(line: bytes) -> float:
    """A ready line -> the seconds the unit took to prepare; ValueError for anything else (a
    failure line's message included)."""
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ValueError(f"the job unit answered {line[:200]!r}, not a ready line")
    body = data.get("ready")
    if not isinstance(body, dict):
        raise ValueError(str(data.get("message") or f"the job unit answered {line[:200]!r}"))
    value = body.get("prepare_s")
    return float(value) if isinstance(value, int | float) else 0.0


def ready_unit(line: bytes) -> str:
    """The unit a ready line names ('' when it names none); :func:`parse_ready` read it first."""
    body = json.loads(line).get("ready")
    unit = body.get("unit") if isinstance(body, dict) else None
    return unit if isinstance(unit, str) else ""


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what}: base64 text expected")
    try:
        # pydantic writes the URL-safe alphabet; a client may write the standard one.
        return base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{what}: not base64 ({exc})") from None


def _number(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name, getattr(Job, name))
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name}: a positive number expected")
    return kind(value)


def _output_cap(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("max_output: a count of bytes expected")
    return value


def parse_job(line: bytes) -> Job:
    """A request line (JobRequest's JSON) -> Job, or ValueError saying what is wrong."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("the request must be a JSON object")
    argv = data.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv: a non-empty list of strings expected")
    files = data.get("files") or {}
    if not isinstance(files, dict):
        raise ValueError("files: an object expected")
    return Job(
        argv=tuple(argv),
        stdin=_b64(data.get("stdin", ""), "stdin"),
        files={check_relative_path(str(k)): _b64(v, f"files.{k}") for k, v in files.items()},
        timeout_s=_number(data, "timeout_s", float),
        memory_mb=_number(data, "memory_mb", int),
        cpus=_number(data, "cpus", int),
        max_output=_output_cap(data.get("max_output", Job.max_output)),
        nproc=_number(data, "nproc", int),
    )


def render_outcome(outcome: Outcome, job: Job, *, backend: str) -> bytes:
    """The answer line, as ``protocol.render_result`` writes it."""
    body = {
        "ok": True,
        "exit_code": outcome.exit_code,
        "stdout": base64.urlsafe_b64encode(outcome.stdout).decode(),
        "stderr": base64.urlsafe_b64encode(outcome.stderr).decode(),
        "stdout_truncated": outcome.stdout_truncated,
        "stderr_truncated": outcome.stderr_truncated,
        "timed_out": outcome.timed_out,
        "backend": backend,
        "warm": False,
        "duration_s": outcome.duration_s,
        "detail": outcome.detail,
        "limits": {"timeout_s": job.timeout_s, "memory_mb": job.memory_mb, "cpus": job.cpus,
                   "max_output": job.max_output},
    }
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def render_failure(kind: str, message: str, hint: str = "") -> bytes:
    """A failure line, as ``protocol.render_error`` writes it."""
    body = {"ok": False, "error": kind, "message": message, "hint": hint}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"
