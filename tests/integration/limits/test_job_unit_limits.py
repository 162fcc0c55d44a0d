"""A gVisor job unit's memory limit acts (agentgw-job@.service, MemoryMax=768M), in the hybrid
lab whose memory controller can enforce it: a job that fills 1 GiB is killed and still answered
(OOMPolicy=continue), one that fills 64 MiB is not, and the 1 GiB one completes once the unit's
limit is raised; /work cannot fill the host's disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgw.sandbox import gvisor
from agentgw.sandbox.job import JobRequest, JobResult
from agentgw.sandbox.jobclient import run_cold, socket_path
from tests.integration.support import agentgw, sh

pytestmark = pytest.mark.integration

FILL = "import sys; b = b'x' * (int(sys.argv[1]) << 20); print(len(b) >> 20)"


@pytest.fixture(scope="module")
def job_socket() -> Iterator[Path]:
    if gvisor.runsc_path() is None:
        pytest.skip("needs runsc (make setup installs it)")
    agentgw("init")
    sh("systemctl", "start", "agentgw-job.socket", check=True)
    try:
        yield socket_path()
    finally:
        sh("systemctl", "stop", "agentgw-job.socket")


def fill(path: Path, mib: int, argv: tuple[str, ...] = ("python3", "-c", FILL)) -> JobResult:
    """One job through a new unit (prepare and job at once), as the broker runs a cold one."""
    return run_cold(path, JobRequest(argv=(*argv, str(mib)), timeout_s=60, memory_mb=1024))


def test_a_job_over_the_units_memory_is_killed_and_answered(job_socket: Path) -> None:
    small = fill(job_socket, 64)
    assert small.exit_code == 0, small
    big = fill(job_socket, 1024)
    assert big.exit_code == 137, big  # SIGKILL
    # The same job with the unit's limit raised (a runtime drop-in) completes: it was the limit.
    dropin = Path("/run/systemd/system/agentgw-job@.service.d/memory.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("[Service]\nMemoryMax=2G\n")
    try:
        sh("systemctl", "daemon-reload", check=True)
        raised = fill(job_socket, 1024)
    finally:
        dropin.unlink()
        sh("systemctl", "daemon-reload", check=True)
    assert raised.exit_code == 0, raised


def test_a_job_cannot_fill_the_disk_through_work(job_socket: Path) -> None:
    """/work is written through to the unit's own 256 MiB tmpfs: 200 MiB fit, 300 do not."""
    write = ("sh", "-c", 'dd if=/dev/zero of=/work/big bs=1M count="$1"', "w")
    assert fill(job_socket, 200, write).exit_code == 0
    full = fill(job_socket, 300, write)
    assert full.exit_code != 0, full
    assert b"No space left" in full.stderr, full
