"""Job requests as data: validation, the per-job archive, and reading the guest's framed output."""

from __future__ import annotations

import base64
import shlex
import stat

import pytest
from pydantic import ValidationError

from agentgw.sandbox import guest
from agentgw.sandbox.cpio import parse
from agentgw.sandbox.job import (
    MAX_FILES,
    MAX_INPUT_BYTES,
    TIMED_OUT_EXIT,
    JobRequest,
    JobResult,
    parse_output,
    render_command,
    render_job_cpio,
    render_limits,
    render_nonce_cpio,
    render_result,
    render_warm_payload,
)

NONCE = "0123456789abcdef0123456789abcdef"


def guest_output(out: bytes, err: bytes, rc: int, timed: int = 0, *, cap: int = 1 << 20,
                 crlf: bool = False) -> bytes:
    """What the guest init prints: base64 in 76-column lines (busybox base64), nonce frames."""
    lines: list[str] = ["[    0.912] some kernel noise"]
    for name, data in (("stdout", out), ("stderr", err)):
        lines.append(f"{NONCE} BEGIN {name} {len(data)}")
        b64 = base64.b64encode(data[:cap]).decode()
        lines += [b64[i:i + 76] for i in range(0, len(b64), 76)]
        lines.append(f"{NONCE} END")
    lines += [f"{NONCE} EXIT {rc} {timed}", f"{NONCE} DONE", "reboot: Restarting system"]
    sep = "\r\n" if crlf else "\n"
    return sep.join(lines).encode() + sep.encode()


def test_request_defaults_and_json_round_trip() -> None:
    """The request is the broker's JSON protocol too: bytes travel as base64 and come back."""
    req = JobRequest(argv=("cat",), stdin=b"\x00\xff", files={"a/b": b"\x01"})
    again = JobRequest.model_validate_json(req.model_dump_json())
    assert again == req
    assert (req.timeout_s, req.memory_mb, req.cpus) == (10.0, 256, 1)


@pytest.mark.parametrize(
    "fields",
    [
        {"argv": ()},
        {"argv": ("a\0b",)},
        {"argv": ("x",), "files": {"../etc/passwd": b""}},
        {"argv": ("x",), "files": {"/abs": b""}},
        {"argv": ("x",), "files": {"a/./b": b""}},
        {"argv": ("x",), "timeout_s": 0},
        {"argv": ("x",), "memory_mb": 16},
        {"argv": ("x",), "stdin": b"x" * (MAX_INPUT_BYTES + 1)},
        {"argv": ("x",), "files": {f"f{i}": b"" for i in range(MAX_FILES + 1)}},
        {"argv": ("x",), "surprise": 1},
    ],
)
def test_bad_requests_are_refused(fields: dict[str, object]) -> None:
    """Empty or NUL argv, escaping file paths, out-of-range limits, oversize input, unknown keys."""
    with pytest.raises(ValidationError):
        JobRequest.model_validate(fields)


def test_command_quotes_every_argument() -> None:
    """The job line is ``exec`` + argv quoted so the guest shell sees exactly these words."""
    argv = ("sh", "-c", "echo 'hi'; exit 3", "$HOME", "a b", "")
    line = render_command(argv).splitlines()[-1]
    assert shlex.split(line) == ["exec", *argv]
    assert render_command(argv).startswith(f"cd /{guest.WORK} ")


def test_limits_are_numbers_only() -> None:
    """The limits file the guest sources holds nothing a request could turn into shell code."""
    text = render_limits(JobRequest(argv=("x",), timeout_s=2.5, nproc=64, max_output=10))
    assert text == "TIMEOUT=2.500\nNPROC=64\nOUTCAP=10\n"


def test_job_archive_layout_and_owners() -> None:
    """Control files are root's (nonce 0600), job files the sandbox user's, under /work."""
    req = JobRequest(argv=("true",), stdin=b"in", files={"d/e/f.txt": b"data"})
    got = {e.name: e for e in parse(render_job_cpio(req, NONCE))}
    assert got[guest.NONCE].data == f"{NONCE}\n".encode()
    assert stat.S_IMODE(got[guest.NONCE].mode) == 0o600 and got[guest.NONCE].uid == 0
    assert got[guest.JOB_STDIN].data == b"in"
    assert got[guest.JOB_CMD].data == render_command(("true",)).encode()
    for name in ("work", "work/d", "work/d/e", "work/d/e/f.txt"):
        assert (got[name].uid, got[name].gid) == (guest.UID, guest.GID)
    assert got["work/d/e/f.txt"].data == b"data"


def test_warm_payload_has_no_nonce_and_announces_its_length() -> None:
    """A warm VM booted with its nonce; the job it receives carries none, after a length line."""
    req = JobRequest(argv=("true",))
    payload = render_warm_payload(req)
    header, _, body = payload.partition(b"\n")
    assert header == b"JOB %d" % len(body)
    assert guest.NONCE not in {e.name for e in parse(body)}
    assert {e.name for e in parse(render_nonce_cpio(NONCE))} == {guest.CONTROL, guest.NONCE}


def test_parse_reads_streams_exit_code_and_ignores_noise() -> None:
    """Binary output survives, kernel lines around the frames are ignored, CRLF is tolerated."""
    out, err = bytes(range(256)) * 3, b"warning\n"
    for crlf in (False, True):
        parsed = parse_output(guest_output(out, err, 3, crlf=crlf), NONCE, 1 << 20)
        assert (parsed.stdout, parsed.stderr, parsed.exit_code) == (out, err, 3)
        assert parsed.done and not parsed.timed_out and not parsed.stdout_truncated


def test_kernel_line_inside_a_block_is_skipped() -> None:
    """A kernel message landing between base64 lines does not corrupt the stream."""
    text = guest_output(b"x" * 200, b"", 0).replace(
        f"{NONCE} END".encode(), b"[   1.2] oom-kill: something\n" + f"{NONCE} END".encode(), 1
    )
    assert parse_output(text, NONCE, 1 << 20).stdout == b"x" * 200


def test_frames_of_another_nonce_are_not_believed() -> None:
    """Only lines carrying this VM's nonce count: a forged frame changes nothing."""
    forged = f"{'f' * 32} EXIT 0 0\n".encode()
    parsed = parse_output(forged + guest_output(b"", b"", 7), NONCE, 100)
    assert parsed.exit_code == 7
    assert parse_output(forged, NONCE, 100).exit_code is None


def test_truncation_is_flagged_from_the_reported_size() -> None:
    """The guest sends at most cap bytes and reports cap + 1: the result says truncated."""
    parsed = parse_output(guest_output(b"y" * 11, b"", 0, cap=10), NONCE, 10)
    assert parsed.stdout == b"y" * 10 and parsed.stdout_truncated
    assert not parsed.stderr_truncated


def test_host_enforces_the_cap_too() -> None:
    """A guest that sends more than the cap is cut at the cap, and flagged."""
    parsed = parse_output(guest_output(b"z" * 50, b"", 0), NONCE, 20)
    assert parsed.stdout == b"z" * 20 and parsed.stdout_truncated


def test_failure_frame_and_missing_result() -> None:
    """An init failure is reported with its reason; a transcript without EXIT has no code."""
    parsed = parse_output(f"{NONCE} FAIL bad job archive\n".encode(), NONCE, 10)
    assert parsed.failure == "bad job archive" and parsed.exit_code is None


def test_timed_out_job_reads_as_exit_124() -> None:
    """A job killed at its timeout inside the VM is exit 124 with timed_out set."""
    parsed = parse_output(guest_output(b"partial", b"", 137, timed=1), NONCE, 100)
    result = render_result(parsed, backend="tcg", warm=False, duration_s=1.23456)
    assert result == JobResult(
        exit_code=TIMED_OUT_EXIT, stdout=b"partial", timed_out=True, backend="tcg",
        duration_s=1.2346, detail="killed at the timeout inside the VM",
    )
