"""The job unit's standard-library wire format agrees with the broker's pydantic one, both ways;
its checks refuse what the models refuse; the gVisor spec binds busybox over the statx applets
and keeps the root writable only rootless; the job unit answers a ready line, then one line per
request."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from agentgw.sandbox import gvisor, jobunit
from agentgw.sandbox.job import JobRequest
from agentgw.sandbox.jobspec import (
    Job,
    Outcome,
    Prepare,
    parse_job,
    parse_ready,
    render_outcome,
    render_prepare,
)
from agentgw.sandbox.protocol import parse_response


def test_a_request_as_the_broker_sends_it_parses_to_the_same_job() -> None:
    request = JobRequest(argv=("sh", "-c", "cat in/x"), stdin=b"\x00in", files={"in/x": b"\xff"},
                         timeout_s=5, memory_mb=128, max_output=0, nproc=64)
    job = parse_job(request.model_dump_json().encode() + b"\n")
    assert job == gvisor.job_of(request)
    assert (job.argv, job.stdin, dict(job.files), job.max_output) == (
        ("sh", "-c", "cat in/x"), b"\x00in", {"in/x": b"\xff"}, 0)


def test_an_answer_of_the_job_unit_reads_as_the_brokers_own() -> None:
    job = Job(argv=("true",), timeout_s=3.0, memory_mb=128)
    outcome = Outcome(exit_code=3, stdout=b"\x00out\xff\xfe", stderr=b"err", stdout_truncated=True,
                      stderr_truncated=False, timed_out=False, duration_s=0.25, detail="")
    result, limits = parse_response(render_outcome(outcome, job, backend="gvisor"))
    assert (result.exit_code, result.stdout, result.stderr, result.stdout_truncated) == (
        3, b"\x00out\xff\xfe", b"err", True)
    assert (result.backend, result.warm, limits.timeout_s, limits.memory_mb) == (
        "gvisor", False, 3.0, 128)


@pytest.mark.parametrize("line", [
    b'{"argv": []}',
    b'{"argv": "true"}',
    b'{"argv": ["true"], "files": {"/etc/x": ""}}',
    b'{"argv": ["true"], "files": {"a/../b": ""}}',
    b'{"argv": ["true"], "stdin": "not base64!"}',
    b'{"argv": ["true"], "timeout_s": true}',
    b'{"argv": ["true"], "max_output": -1}',
    b'[1]',
])
def test_bad_requests_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case its own message
        parse_job(line)


def test_spec_binds_busybox_over_the_statx_applets_and_keeps_the_root_read_only_as_root() -> None:
    spec = gvisor.render_spec(Job(argv=("true",)), 5, Path("/w"), "h")
    binds = {m["destination"]: m["source"] for m in spec["mounts"] if m["type"] == "bind"}
    assert {d for d, src in binds.items() if src == gvisor.BUSYBOX} == {
        "/usr/bin/ls", "/usr/bin/stat", "/usr/bin/touch"}
    assert spec["root"]["readonly"] is True
    rootless = gvisor.render_spec(Job(argv=("true",)), 0, Path("/w"), "h", busybox=False,
                                  rootless=True)
    assert rootless["root"]["readonly"] is False
    assert gvisor.BUSYBOX not in {m.get("source") for m in rootless["mounts"]}


def test_the_job_unit_answers_ready_then_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Job] = []

    def fake(job: Job) -> Outcome:
        seen.append(job)
        return Outcome(exit_code=0, stdout=b"hi\n", stderr=b"", stdout_truncated=False,
                       stderr_truncated=False, timed_out=False, duration_s=0.1)

    monkeypatch.setattr(gvisor, "run_plain", fake)
    out = io.BytesIO()
    prepare = render_prepare(Prepare("gvisor"))
    assert jobunit.serve_one(io.BytesIO(prepare + b'{"argv": ["echo", "hi"]}\n'), out) == 0
    ready, answer, end = out.getvalue().split(b"\n")
    result, _ = parse_response(answer)
    assert (parse_ready(ready) >= 0, end) == (True, b"")
    assert (seen[0].argv, result.stdout, result.backend) == (("echo", "hi"), b"hi\n", "gvisor")
    bad = io.BytesIO()
    assert jobunit.serve_one(io.BytesIO(prepare + b"{}\n"), bad) == 2
    assert b'"error":"bad_request"' in bad.getvalue().split(b"\n")[1]
    no_prepare = io.BytesIO()
    assert jobunit.serve_one(io.BytesIO(b'{"argv": ["true"]}\n'), no_prepare) == 2
    assert b"could not prepare" in no_prepare.getvalue()
    assert seen == [seen[0]]
