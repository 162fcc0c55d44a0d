"""The job unit's standard-library wire format agrees with the broker's pydantic one, both ways;
its checks refuse what the models refuse; prepare and ready lines round-trip; the gVisor spec
binds busybox over the statx applets, keeps the root writable only rootless and runs the
waiting wrapper; the job unit prepares, says ready, runs one job and answers once."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from agentgw.errors import AgentgwError
from agentgw.sandbox import bundle, cpus, gvisor, jobunit
from agentgw.sandbox.job import JobRequest
from agentgw.sandbox.jobspec import (
    Job,
    Outcome,
    Prepare,
    cgroup_paths,
    oom_kills,
    parse_job,
    parse_prepare,
    parse_ready,
    ready_unit,
    render_outcome,
    render_prepare,
    render_ready,
    unit_of_cgroup,
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


def test_prepare_and_ready_lines_round_trip_and_bad_ones_are_refused() -> None:
    spec = Prepare("gvisor", memory_mb=512, cpus=2, nproc=64)
    line = render_prepare(spec)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_prepare(line) == spec
    assert parse_prepare(b'{"prepare": {"backend": "kvm"}}') == Prepare("kvm")
    for bad in (b'{"argv": ["true"]}', b'{"prepare": {"backend": ""}}',
                b'{"prepare": {"backend": "gvisor", "cpus": 0}}', b"[]"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_prepare(bad)
    assert parse_ready(render_ready("gvisor", 0.123456)) == 0.1235
    with pytest.raises(ValueError, match="no runsc"):
        parse_ready(b'{"ok":false,"error":"unavailable","message":"no runsc"}\n')


def test_spec_binds_busybox_over_the_statx_applets_and_keeps_the_root_read_only_as_root() -> None:
    spec = bundle.render_spec(Prepare("gvisor"), 5, (Path("/t/work"), Path("/io/job")), "h")
    binds = {m["destination"]: m["source"] for m in spec["mounts"] if m["type"] == "bind"}
    assert {d for d, src in binds.items() if src == bundle.BUSYBOX} == {
        "/usr/bin/ls", "/usr/bin/stat", "/usr/bin/touch"}
    assert (binds["/work"], binds["/job"]) == ("/t/work", "/io/job")
    assert spec["process"]["args"] == ["/bin/sh", "-c", bundle.WRAPPER]
    assert spec["root"]["readonly"] is True
    rootless = bundle.render_spec(Prepare("gvisor", nproc=9), 0, (Path("/w"), Path("/j")), "h",
                                  busybox=False, rootless=True)
    assert rootless["root"]["readonly"] is False
    assert rootless["process"]["rlimits"][0] == {"type": "RLIMIT_NPROC", "hard": 9, "soft": 9}
    assert bundle.BUSYBOX not in {m.get("source") for m in rootless["mounts"]}


def test_the_go_line_is_the_argv_quoted_and_long_or_multiline_ones_go_in_a_script() -> None:
    go, script = bundle.render_go(("sh", "-c", "echo 'a b'; exit 3"))
    assert script is None
    assert go == b"sh -c 'echo '\"'\"'a b'\"'\"'; exit 3'\n"
    assert "exec </dev/null >/job/out 2>/job/err" in bundle.WRAPPER  # before the go line
    assert bundle.WRAPPER.index(">/job/out") < bundle.WRAPPER.index("read -r go")
    assert bundle.render_go(("cat",), stdin=True) == (b"cat </job/in\n", None)
    for argv in (("printf", "a\nb"), ("echo", "x" * bundle.INLINE_MAX)):
        go, script = bundle.render_go(argv)
        assert go == b"/bin/sh /job/run\n"
        assert script == b"exec " + shlex.join(argv).encode() + b"\n"
        assert bundle.render_go(argv, stdin=True)[0] == b"/bin/sh /job/run </job/in\n"
    assert [gvisor.parse_status(x) for x in (b"rc 0\n", b"rc 137\n", b"ready\n", b"")] == [
        0, 137, None, None]


def test_output_is_read_up_to_the_cap(tmp_path: Path) -> None:
    (tmp_path / "out").write_bytes(b"x" * 10)
    assert gvisor.read_capped(tmp_path / "out", 10) == (b"x" * 10, False)
    assert gvisor.read_capped(tmp_path / "out", 4) == (b"xxxx", True)
    assert gvisor.read_capped(tmp_path / "out", 0) == (b"", True)
    assert gvisor.read_capped(tmp_path / "missing", 4) == (b"", False)


class FakeSandbox:
    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.closed = 0

    def run(self, job: Job) -> Outcome:
        self.jobs.append(job)
        return Outcome(exit_code=0, stdout=b"hi\n", stderr=b"", stdout_truncated=False,
                       stderr_truncated=False, timed_out=False, duration_s=0.1)

    def close(self) -> None:
        self.closed += 1


def test_the_job_unit_prepares_says_ready_runs_one_job_and_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = FakeSandbox()
    shapes: list[Prepare] = []
    monkeypatch.setattr(gvisor, "prepare", lambda spec: shapes.append(spec) or box)
    out = io.BytesIO()
    lines = render_prepare(Prepare("gvisor")) + b'{"argv": ["echo", "hi"]}\n'
    assert jobunit.serve_one(io.BytesIO(lines), out) == 0
    ready, answer = out.getvalue().splitlines(keepends=True)
    assert parse_ready(ready) >= 0
    result, _ = parse_response(answer)
    assert (shapes, box.jobs[0].argv, result.stdout, box.closed) == (
        [Prepare("gvisor")], ("echo", "hi"), b"hi\n", 1)


@pytest.mark.parametrize(("lines", "code", "kind"), [
    (b'{"argv": ["echo", "hi"]}\n', 2, b'"error":"bad_request"'),  # no prepare line
    (render_prepare(Prepare("gvisor")) + b"{}\n", 2, b'"error":"bad_request"'),
    (render_prepare(Prepare("gvisor")) + b'{"argv": ["true"], "memory_mb": 128}\n', 2,
     b"differ from the prepared"),
    (render_prepare(Prepare("xen")), 1, b"unknown sandbox backend"),
    (render_prepare(Prepare("gvisor")), 0, b""),  # the broker closed before a job
    (b"", 0, b""),  # the broker closed a spare connection before its prepare line
])
def test_the_job_unit_refuses_what_it_cannot_run_and_closes_its_sandbox(
    monkeypatch: pytest.MonkeyPatch, lines: bytes, code: int, kind: bytes,
) -> None:
    box = FakeSandbox()
    monkeypatch.setattr(gvisor, "prepare", lambda spec: box)
    out = io.BytesIO()
    assert jobunit.serve_one(io.BytesIO(lines), out) == code
    assert kind in out.getvalue()
    assert box.jobs == []
    assert box.closed == (1 if b"prepare" in lines and b"xen" not in lines else 0)


def test_a_sandbox_that_cannot_start_is_an_unavailable_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(spec: Prepare) -> FakeSandbox:
        raise AgentgwError("the gVisor sandbox failed to start: boom")

    monkeypatch.setattr(gvisor, "prepare", broken)
    out = io.BytesIO()
    assert jobunit.serve_one(io.BytesIO(render_prepare(Prepare("gvisor"))), out) == 1
    assert b'"error":"unavailable"' in out.getvalue() and b"boom" in out.getvalue()


def test_the_job_unit_closes_its_sandbox_when_the_broker_goes_away_during_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job runs until its sandbox is closed; the broker's side of the connection closes
    mid-job: the unit closes the sandbox (its job ends) and the unit ends."""
    import socket
    import threading

    closed = threading.Event()

    class Blocking(FakeSandbox):
        def run(self, job: Job) -> Outcome:
            assert closed.wait(10), "the sandbox was not closed"
            return super().run(job)

        def close(self) -> None:
            closed.set()
            super().close()

    monkeypatch.setattr(gvisor, "prepare", lambda spec: Blocking())
    broker, unit = socket.socketpair()
    broker.sendall(render_prepare(Prepare("gvisor")) + b'{"argv": ["sleep", "30"]}\n')
    reader, writer = unit.makefile("rb"), unit.makefile("wb")
    codes: list[int] = []
    serving = threading.Thread(target=lambda: codes.append(jobunit.serve_one(reader, writer)))
    serving.start()
    assert broker.makefile("rb").readline().startswith(b'{"ready"')
    broker.close()
    serving.join(10)
    unit.close()
    assert closed.is_set() and codes == [1]  # the answer could not be sent


def test_the_ready_line_names_the_unit_and_old_ones_name_none() -> None:
    line = render_ready("gvisor", 0.1, "agentgw-job@1-89-0.service")
    assert (parse_ready(line), ready_unit(line)) == (0.1, "agentgw-job@1-89-0.service")
    assert ready_unit(b'{"ready":{"backend":"gvisor","prepare_s":0.1}}\n') == ""


@pytest.mark.parametrize(("text", "unit"), [
    ("0::/system.slice/system-agentgw\\x2djob.slice/agentgw-job@1-89-0.service\n",
     "agentgw-job@1-89-0.service"),
    ("12:memory:/system.slice/system-agentgw\\x2djob.slice/agentgw-job@2-9-0.service\n"
     "1:name=systemd:/system.slice/system-agentgw\\x2djob.slice/agentgw-job@2-9-0.service\n"
     "0::/system.slice/system-agentgw\\x2djob.slice/agentgw-job@2-9-0.service\n",
     "agentgw-job@2-9-0.service"),
    ("0::/user.slice/user-0.slice/session-1.scope\n", ""),
    ("", ""),
])
def test_the_unit_is_read_from_the_processs_cgroup(text: str, unit: str) -> None:
    assert unit_of_cgroup(text) == unit


def test_cgroup_paths_name_each_hierarchy() -> None:
    text = ("12:memory:/system.slice/a.service\n1:name=systemd:/system.slice/a.service\n"
            "0::/system.slice/a.service\n")
    assert cgroup_paths(text) == {"memory": "/system.slice/a.service",
                                  "name=systemd": "/system.slice/a.service",
                                  "": "/system.slice/a.service"}


def test_oom_kills_are_read_from_cgroup2_and_v1_counters() -> None:
    assert oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n") == 1  # memory.events
    assert oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n") == 2  # v1 oom_control
    assert oom_kills("oom_kill_disable 0\nunder_oom 0\n") == 0


def test_a_sandbox_is_pinned_to_its_jobs_cpus_from_where_it_runs_unless_they_are_all() -> None:
    assert cpus.choose_cpus({0, 1}, 1, 1) == frozenset({1})
    assert cpus.choose_cpus({0, 1}, 1, 0) == frozenset({0})
    assert cpus.choose_cpus({2, 5, 7}, 2, 7) == frozenset({7, 2})  # wraps, in order
    assert cpus.choose_cpus({2, 5, 7}, 1, 3) == frozenset({2})  # not an allowed one: the first
    assert cpus.choose_cpus({2, 5, 7}, 1, None) == frozenset({2})
    assert cpus.choose_cpus({0, 1}, 2, 0) is None  # all of them: not pinned
    assert cpus.choose_cpus({0, 1}, 4, 0) is None
    assert cpus.choose_cpus({3}, 1, 3) is None
    cpu = cpus.current_cpu()
    assert cpu is not None and cpu in range(os.cpu_count() or 1)


def test_pinned_applies_to_this_thread_for_the_block_and_restores_it() -> None:
    before = os.sched_getaffinity(0)
    one = frozenset({min(before)})
    with cpus.pinned(one):
        assert os.sched_getaffinity(0) == one
        show = "import os; print(sorted(os.sched_getaffinity(0)))"
        child = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True,
                               check=True)
        assert child.stdout.strip() == str(sorted(one))  # what it starts inherits them
    assert os.sched_getaffinity(0) == before
    with cpus.pinned(None):
        assert os.sched_getaffinity(0) == before


def test_the_rootfs_has_the_hosts_loader_cache_when_there_is_one(tmp_path: Path) -> None:
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes(b"glibc-ld.so.cache1.1")
    bundle.make_rootfs(tmp_path / "a", cache)
    assert (tmp_path / "a/etc/ld.so.cache").read_bytes() == b"glibc-ld.so.cache1.1"
    assert (tmp_path / "a/etc/ld.so.cache").stat().st_mode & 0o777 == 0o644
    bundle.make_rootfs(tmp_path / "b", tmp_path / "none")
    assert not (tmp_path / "b/etc/ld.so.cache").exists()
    assert (tmp_path / "b/etc/passwd").is_file()
