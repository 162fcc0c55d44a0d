"""Jobs in real microVMs: output, exit code, input, limits, timeouts, isolation, warm pool."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from agentgw.sandbox import backend, guest, image
from agentgw.sandbox.job import TIMED_OUT_EXIT, JobRequest
from agentgw.sandbox.pool import WarmPool
from agentgw.sandbox.vm import Machine, run_cold, run_warm, start_warm

pytestmark = pytest.mark.integration

AGENTGW = "/opt/agentgw/venv/bin/agentgw"


def test_exec_cli_prints_output_and_exits_with_the_jobs_code(sandbox_cache: Path) -> None:
    """``agentgw exec api -- sh -c 'echo hi; exit 3'`` prints hi and exits 3."""
    proc = subprocess.run(
        [AGENTGW, "exec", "--direct", "api", "--", "sh", "-c", "echo hi; exit 3"],
        capture_output=True, env={**os.environ, "AGENTGW_SANDBOX_CACHE": str(sandbox_cache)},
        timeout=60,
    )
    assert (proc.stdout, proc.returncode) == (b"hi\n", 3), proc.stderr


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_stdin_and_files_round_trip_byte_exact(
    sandbox_image: image.Image, machine: Machine, warm: bool
) -> None:
    """Binary stdin and a binary file reach the job unchanged (both ways of delivering a job)."""
    data = bytes(range(256)) * 64 + os.urandom(4096)
    stdin = os.urandom(100_000) + b"\r\n\x03\x04\x1a\x00"
    request = JobRequest(
        argv=("sh", "-c", "sha256sum; sha256sum in/data.bin; stat -c %u in/data.bin"),
        stdin=stdin, files={"in/data.bin": data}, memory_mb=128,
    )
    if warm:
        vm = start_warm(machine, sandbox_image, memory_mb=128, cpus=1)
        vm.wait_ready()
        result = run_warm(vm, request)
    else:
        result = run_cold(machine, sandbox_image, request)
    lines = result.stdout.decode().split("\n")
    assert result.exit_code == 0, result
    assert lines[0].split()[0] == hashlib.sha256(stdin).hexdigest()
    assert lines[1].split()[0] == hashlib.sha256(data).hexdigest()
    assert lines[2] == str(guest.UID)
    assert result.warm is warm


def test_only_loopback_unprivileged_no_new_privs(
    sandbox_image: image.Image, machine: Machine
) -> None:
    """Inside the VM only ``lo`` exists, and the job runs as the sandbox user with NoNewPrivs."""
    result = run_cold(machine, sandbox_image, JobRequest(
        argv=("sh", "-c", "ls /sys/class/net; id -u; grep NoNewPrivs /proc/self/status"),
        memory_mb=128,
    ))
    assert result.stdout.decode().split() == ["lo", str(guest.UID), "NoNewPrivs:", "1"]


def test_fork_bomb_is_contained(sandbox_image: image.Image, machine: Machine) -> None:
    """A fork bomb hits the process limit, the job still finishes, nothing leaks to the host."""
    before = len(psutil.pids())
    started = time.monotonic()
    result = run_cold(machine, sandbox_image, JobRequest(
        argv=("sh", "-c", "f() { f | f & }; f; sleep 2; echo survived"),
        timeout_s=15, nproc=64, memory_mb=128,
    ))
    assert result.stdout == b"survived\n" and result.exit_code == 0
    assert b"can't fork" in result.stderr
    assert time.monotonic() - started < 30
    assert len(psutil.pids()) <= before + 5


def test_memory_hog_is_oom_killed_inside(sandbox_image: image.Image, machine: Machine) -> None:
    """A job growing past a 128 MB VM is OOM-killed in the guest; the result still comes back."""
    result = run_cold(machine, sandbox_image, JobRequest(
        argv=("sh", "-c", 'sh -c "x=a; while :; do x=\\$x\\$x; done"; echo child=$?'),
        timeout_s=30, memory_mb=128,
    ))
    assert result.stdout == b"child=137\n" and not result.timed_out, result


def test_sleep_is_killed_at_the_timeout(sandbox_image: image.Image, machine: Machine) -> None:
    """``sleep 100`` with a 3 s timeout ends as exit 124, timed_out, well before 100 s."""
    started = time.monotonic()
    result = run_cold(machine, sandbox_image,
                      JobRequest(argv=("sleep", "100"), timeout_s=3, memory_mb=128))
    assert (result.exit_code, result.timed_out) == (TIMED_OUT_EXIT, True)
    assert time.monotonic() - started < 20


def test_host_deadline_kills_the_vm(sandbox_image: image.Image, machine: Machine) -> None:
    """A VM still running at the host's wall-clock deadline is killed and reported as such."""
    started = time.monotonic()
    result = run_cold(machine, sandbox_image, JobRequest(argv=("sleep", "100"), memory_mb=128),
                      deadline_s=1.0)
    assert (result.exit_code, result.timed_out) == (TIMED_OUT_EXIT, True)
    assert "host deadline" in result.detail
    assert time.monotonic() - started < 5


def test_output_over_the_cap_is_truncated_and_flagged(
    sandbox_image: image.Image, machine: Machine
) -> None:
    """300 kB of output with a 100 kB cap: exactly the cap comes back, flagged truncated."""
    result = run_cold(machine, sandbox_image, JobRequest(
        argv=("sh", "-c", "yes | head -c 300000; echo done >&2"),
        max_output=100_000, memory_mb=128,
    ))
    assert len(result.stdout) == 100_000 and result.stdout_truncated
    assert result.stderr == b"done\n" and not result.stderr_truncated


def test_selftest_guest_kernel_differs_from_host(
    sandbox_image: image.Image, machine: Machine
) -> None:
    """The probe runs under the image's kernel, not the host's: the proof says differs."""
    record = backend.probe(sandbox_image, machine)
    assert record.differs
    assert record.guest_kernel == sandbox_image.kernel_version != record.host_kernel
    assert record.backend == machine.accel


def test_warm_pool_serves_faster_than_a_cold_boot(
    sandbox_image: image.Image, machine: Machine
) -> None:
    """A request taken by a READY pool VM beats booting one, and the pool refills after it."""
    request = JobRequest(argv=("true",), memory_mb=128)
    cold = run_cold(machine, sandbox_image, request)
    with WarmPool(sandbox_image, machine, size=1, memory_mb=128) as pool:
        assert pool.wait_ready(timeout=60)
        warm = pool.run(request)
        assert pool.wait_ready(timeout=60)
    assert warm.warm and warm.exit_code == 0 == cold.exit_code
    assert warm.duration_s < cold.duration_s / 2, (warm.duration_s, cold.duration_s)

