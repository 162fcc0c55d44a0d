"""A sandbox job as data: the request, the result, and the two pure translations between them
and the guest (rendering the per-job cpio, parsing the nonce-framed console output).

The models are the broker's JSON protocol too (bytes travel as base64), so every limit a
request can carry is validated here, once.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import shlex
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentgw.sandbox import guest
from agentgw.sandbox.cpio import Writer

# Their home is jobspec (standard library only); re-exported for the models' users.
from agentgw.sandbox.jobspec import TIMED_OUT_EXIT as TIMED_OUT_EXIT
from agentgw.sandbox.jobspec import check_relative_path as check_relative_path

MiB = 1024 * 1024
MAX_ARGV_BYTES = 128 * 1024  # one shell script line; well under the guest's ARG_MAX
MAX_INPUT_BYTES = 16 * MiB  # stdin + files live in guest RAM; larger data needs a disk image
MAX_FILES = 1024  # files per request: each is materialised (cpio entry or a file on disk)
MAX_OUTPUT_BYTES = 64 * MiB  # the host config allows this much; the VM must hold it twice

Backend = Literal["kvm", "gvisor", "tcg"]
Accel = Literal["kvm", "tcg"]  # the QEMU accelerators


class JobRequest(BaseModel):
    """Run ``argv`` in a fresh VM with ``stdin`` and ``files`` (paths relative to its cwd)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    argv: tuple[str, ...] = Field(min_length=1)
    stdin: bytes = b""
    files: dict[str, bytes] = Field(default_factory=dict)
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    memory_mb: Annotated[int, Field(ge=64, le=16384)] = 256
    cpus: Annotated[int, Field(ge=1, le=64)] = 1
    max_output: Annotated[int, Field(ge=0, le=MAX_OUTPUT_BYTES)] = MiB
    nproc: Annotated[int, Field(ge=8, le=65536)] = 128

    @field_validator("argv")
    @classmethod
    def _argv(cls, argv: tuple[str, ...]) -> tuple[str, ...]:
        if any("\0" in a for a in argv):
            raise ValueError("argv must not contain NUL bytes")
        if len(shlex.join(argv).encode()) > MAX_ARGV_BYTES:
            raise ValueError(f"argv is longer than {MAX_ARGV_BYTES} bytes")
        return argv

    @field_validator("files")
    @classmethod
    def _files(cls, files: dict[str, bytes]) -> dict[str, bytes]:
        if len(files) > MAX_FILES:
            raise ValueError(f"{len(files)} files, over {MAX_FILES}")
        for path in files:
            check_relative_path(path)
        return files

    @model_validator(mode="after")
    def _input_size(self) -> JobRequest:
        size = len(self.stdin) + sum(len(d) for d in self.files.values())
        if size > MAX_INPUT_BYTES:
            raise ValueError(f"stdin and files total {size} bytes, over {MAX_INPUT_BYTES}")
        return self


class MemoryLimit(BaseModel):
    """A gVisor job's memory limit (:mod:`agentgw.sandbox.jobmem`): what the broker set on the
    job's unit and whether the kernel holds it (read back from the unit's cgroup)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(description="MemoryMax= set on the job's unit (0: none set)")
    enforced: bool = Field(description="the unit's cgroup holds that limit")
    note: str = Field(default="", description="why it is not enforced, when it is not")


class JobResult(BaseModel):
    """What came back: output (capped, with flags), exit code, and how it ran."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    backend: Backend
    warm: bool = False
    duration_s: float = 0.0
    detail: str = ""
    memory: MemoryLimit | None = None


def new_nonce() -> str:
    return secrets.token_hex(16)


def render_command(argv: tuple[str, ...]) -> str:
    """The job as a shell script; ``exec`` so the job's status is the script's."""
    return f"cd /{guest.WORK} || exit 126\nexec {shlex.join(argv)}\n"


def render_limits(request: JobRequest) -> str:
    """Shell assignments the guest init sources; only numbers, rendered here from validated ints."""
    return (
        f"TIMEOUT={request.timeout_s:.3f}\n"
        f"NPROC={request.nproc}\n"
        f"OUTCAP={request.max_output}\n"
    )


def _add_nonce(w: Writer, nonce: str) -> None:
    w.dir(guest.CONTROL, 0o711)
    w.file(guest.NONCE, f"{nonce}\n".encode(), 0o600)


def render_nonce_cpio(nonce: str) -> bytes:
    """What a warm VM boots with on top of the base: only its nonce, the job comes later."""
    w = Writer()
    _add_nonce(w, nonce)
    return w.render()


def render_job_cpio(request: JobRequest, nonce: str | None = None) -> bytes:
    """The per-job archive: appended to the base for a cold boot (with ``nonce``), or sent over
    the console to a warm VM (without: it booted with one)."""
    w = Writer()
    if nonce is not None:
        _add_nonce(w, nonce)
    else:
        w.dir(guest.CONTROL, 0o711)
    w.dir(guest.JOB_DIR, 0o755)
    w.file(guest.JOB_CMD, render_command(request.argv).encode(), 0o644)
    w.file(guest.JOB_STDIN, request.stdin, 0o600)
    w.file(guest.JOB_LIMITS, render_limits(request).encode(), 0o600)
    w.dir(guest.WORK, 0o700, uid=guest.UID, gid=guest.GID)
    for path in sorted(request.files):
        name = f"{guest.WORK}/{path}"
        w.parents(name, 0o755, uid=guest.UID, gid=guest.GID)
        w.file(name, request.files[path], 0o644, uid=guest.UID, gid=guest.GID)
    return w.render()


def render_warm_payload(request: JobRequest) -> bytes:
    """The bytes written to a warm VM's channel: a length line, then the job cpio (the channel
    is raw, so binary passes unchanged)."""
    body = render_job_cpio(request)
    return b"JOB %d\n" % len(body) + body


def output_limit(max_output: int) -> int:
    """Most console bytes an honest guest can print for a job with this cap (base64 + framing
    + boot noise); more means the guest is misbehaving and is cut off."""
    return 2 * (max_output * 4 // 3 + max_output // 38 + 8) + 256 * 1024


@dataclass(frozen=True)
class GuestOutput:
    """The frames found in a console transcript. ``exit_code`` is None if none arrived."""

    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    exit_code: int | None = None
    timed_out: bool = False
    done: bool = False
    failure: str = ""


_B64_LINE = re.compile(rb"^[A-Za-z0-9+/=]*$")


def _frames(transcript: bytes, nonce: str) -> list[tuple[str, list[bytes]]]:
    """Split the transcript into (frame line, data lines); lines before a frame and lines that
    cannot be base64 (kernel messages) are dropped."""
    marker = nonce.encode() + b" "
    frames: list[tuple[str, list[bytes]]] = []
    for raw in transcript.split(b"\n"):
        line = raw.strip(b"\r")
        at = line.find(marker)
        if at >= 0:
            frames.append((line[at + len(marker):].decode("ascii", "replace"), []))
        elif frames and _B64_LINE.match(line):
            frames[-1][1].append(line)
    return frames


def parse_output(transcript: bytes, nonce: str, cap: int) -> GuestOutput:
    """Read the nonce-framed result out of a console transcript, holding each stream to ``cap``."""
    streams: dict[str, tuple[bytes, bool]] = {}
    exit_code: int | None = None
    timed_out = done = False
    failure = ""
    for frame, data in _frames(transcript, nonce):
        word, _, rest = frame.partition(" ")
        args = rest.split()
        if word == "BEGIN" and len(args) == 2 and args[0] in ("stdout", "stderr"):
            try:
                blob = base64.b64decode(b"".join(data))
                reported = int(args[1])
            except (binascii.Error, ValueError):
                blob, reported = b"", 0
                failure = failure or f"undecodable {args[0]}"
            streams[args[0]] = (blob[:cap], reported > cap or len(blob) > cap)
        elif word == "EXIT" and len(args) == 2 and args[0].lstrip("-").isdigit():
            exit_code, timed_out = int(args[0]), args[1] == "1"
        elif word == "DONE":
            done = True
        elif word == "FAIL":
            failure = rest or "guest init failed"
    out, out_cut = streams.get("stdout", (b"", False))
    err, err_cut = streams.get("stderr", (b"", False))
    return GuestOutput(out, err, out_cut, err_cut, exit_code, timed_out, done, failure)


def render_result(
    parsed: GuestOutput, *, backend: Backend, warm: bool, duration_s: float
) -> JobResult:
    """The job's result from what the guest said; a guest-side timeout reads as exit 124."""
    code = parsed.exit_code if parsed.exit_code is not None else TIMED_OUT_EXIT
    return JobResult(
        exit_code=TIMED_OUT_EXIT if parsed.timed_out else code,
        stdout=parsed.stdout,
        stderr=parsed.stderr,
        stdout_truncated=parsed.stdout_truncated,
        stderr_truncated=parsed.stderr_truncated,
        timed_out=parsed.timed_out,
        backend=backend,
        warm=warm,
        duration_s=round(duration_s, 4),
        detail="killed at the timeout inside the VM" if parsed.timed_out else "",
    )

