"""The broker's JSON line protocol: parsing, clamping to host limits, answers, exec records."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest

from agentgw.model.host import Sandbox
from agentgw.sandbox.job import JobRequest, JobResult, MemoryLimit
from agentgw.sandbox.protocol import (
    BrokerError,
    Limits,
    argv_digest,
    host_limits,
    parse_request,
    parse_response,
    render_error,
    render_record,
    render_request,
    render_result,
)

HOST = Limits(timeout_s=10.0, memory_mb=256, cpus=1, max_output=4096)


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def test_absent_limits_are_the_hosts_and_larger_ones_are_lowered() -> None:
    """No limit given: the host's. Above the host's: lowered to it. Below: kept."""
    assert parse_request(line(argv=["true"]), HOST).model_dump(
        include={"timeout_s", "memory_mb", "cpus", "max_output"}
    ) == {"timeout_s": 10.0, "memory_mb": 256, "cpus": 1, "max_output": 4096}
    big = parse_request(
        line(argv=["true"], timeout_s=3000, memory_mb=8192, cpus=8, max_output=10**7), HOST
    )
    assert (big.timeout_s, big.memory_mb, big.cpus, big.max_output) == (10.0, 256, 1, 4096)
    small = parse_request(line(argv=["true"], timeout_s=0.5, memory_mb=128), HOST)
    assert (small.timeout_s, small.memory_mb) == (0.5, 128)


def test_host_limits_come_from_the_sandbox_config() -> None:
    """The ceilings are the host config's sandbox section, field for field."""
    config = Sandbox(timeout_s=30, memory_mb=512, vcpus=2, max_output_bytes=1000)
    assert host_limits(config) == Limits(30.0, 512, 2, 1000)


def test_stdin_and_files_travel_as_base64() -> None:
    """Binary stdin and files decode to the exact bytes."""
    data = bytes(range(256))
    request = parse_request(
        line(argv=["cat"], stdin=base64.b64encode(data).decode(),
             files={"in/x.bin": base64.b64encode(data[::-1]).decode()}),
        HOST,
    )
    assert (request.stdin, request.files) == (data, {"in/x.bin": data[::-1]})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json\n", "not JSON"),
        (b"[1, 2]\n", "JSON object"),
        (line(argv=["true"], env={"A": "1"}), "unknown request fields: env"),
        (line(argv=[]), "argv"),
        (line(argv=["a\u0000b"]), "NUL"),
        (line(argv=["cat"], files={"../etc/passwd": ""}), "relative"),
        (line(argv=["cat"], stdin="***"), "stdin"),
        (line(argv=["true"], timeout_s=-1), "timeout_s"),
        (line(argv=["true"], memory_mb="lots"), "memory_mb"),
        (line(argv=["true"], timeout_s=True), "timeout_s: must be a number"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(raw: bytes, message: str) -> None:
    """Each malformed request is a bad_request naming what is wrong; nothing runs."""
    with pytest.raises(BrokerError, match=message) as err:
        parse_request(raw, HOST)
    assert err.value.kind == "bad_request"


def test_request_line_carries_only_chosen_limits() -> None:
    """The CLI sends only the limits its user set, so the broker applies the host's for the
    rest; the line parses back to the same job."""
    request = JobRequest.model_validate({"argv": ("sh", "-c", "x"), "stdin": b"\x00\xff",
                                         "timeout_s": 3})
    sent = render_request(request)
    assert sent.endswith(b"\n") and sent.count(b"\n") == 1
    assert set(json.loads(sent)) == {"argv", "stdin", "timeout_s"}
    back = parse_request(sent, HOST)
    assert (back.argv, back.stdin, back.timeout_s, back.memory_mb) == (
        ("sh", "-c", "x"), b"\x00\xff", 3.0, 256)


def test_result_round_trips_with_the_limits_used() -> None:
    """A success answer is one line; parsed back it is the same result and limits."""
    request = parse_request(line(argv=["true"], timeout_s=2), HOST)
    result = JobResult(exit_code=3, stdout=b"hi\n", stderr=b"\xff", stdout_truncated=True,
                       backend="tcg", warm=True, duration_s=1.5)
    answer = render_result(result, request)
    assert answer.count(b"\n") == 1 and json.loads(answer)["ok"] is True
    assert parse_response(answer) == (result, Limits(2.0, 256, 1, 4096))


def test_error_answer_raises_with_its_kind_message_and_hint() -> None:
    """A failure answer becomes BrokerError carrying the wire's kind; an unknown kind reads as
    internal rather than being trusted."""
    with pytest.raises(BrokerError) as err:
        parse_response(render_error("busy", "no slot", "retry later"))
    assert (err.value.kind, err.value.message, err.value.hint) == ("busy", "no slot",
                                                                   "retry later")
    with pytest.raises(BrokerError) as odd:
        parse_response(b'{"ok": false, "error": "weird", "message": "m"}')
    assert odd.value.kind == "internal"


def test_argv_digest_is_sha256_of_nul_terminated_arguments() -> None:
    """The digest is reproducible from the argv alone and tells apart argvs that join the
    same ("a b" vs "a", "b")."""
    assert argv_digest(["sh", "-c", "echo hi"]) == hashlib.sha256(
        b"sh\0-c\0echo hi\0").hexdigest()
    assert argv_digest(["a b"]) != argv_digest(["a", "b"])


def test_exec_record_has_the_fields_and_never_the_argv() -> None:
    """One JSON line: time, profile, uid, via, argv digest, duration, exit code, timed_out,
    backend, warm -- and the argv's text appears nowhere in it."""
    argv = ["sh", "-c", "echo secret-token-123"]
    result = JobResult(exit_code=124, timed_out=True, backend="kvm", warm=False,
                       duration_s=5.01234)
    now = datetime(2026, 11, 22, 12, 0, 0, 123000, tzinfo=UTC)
    raw = render_record(profile="api", uid=1001, argv=argv, via="broker", result=result,
                        now=now)
    assert raw.endswith(b"\n") and b"secret-token" not in raw
    assert json.loads(raw) == {
        "time": "2026-11-22T12:00:00.123+00:00", "profile": "api", "uid": 1001,
        "via": "broker", "argv_sha256": argv_digest(argv), "duration_s": 5.0123,
        "exit_code": 124, "timed_out": True, "backend": "kvm", "warm": False,
    }
    failed = json.loads(render_record(profile="api", uid=0, argv=argv, via="direct",
                                      error="the VM exited without a result",
                                      duration_s=2.0, now=now))
    assert (failed["exit_code"], failed["backend"], failed["error"]) == (
        None, None, "the VM exited without a result")
    limited = result.model_copy(update={"backend": "gvisor", "memory": MemoryLimit(
        max_bytes=201326592, enforced=False, note="not enforced: no memory controller")})
    assert json.loads(render_record(profile="api", uid=0, argv=argv, via="broker",
                                    result=limited, now=now))["memory"] == {
        "max_bytes": 201326592, "enforced": False, "note": "not enforced: no memory controller"}
