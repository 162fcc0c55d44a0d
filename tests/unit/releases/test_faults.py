"""The fault variants of the demo runtime (benchmarks/soak.py): healthy first, so a promote of
them can pass, then misbehaving until a limit holds them. The fork bomb, CPU hog and log flood
run only in the lab, where the unit's limits contain them."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.unit.releases.conftest import PYTHON, Host, Notifications

GATEWAY = [PYTHON, "-s", "-P", "-m", "agent_cli.main", "gateway", "run"]
MIB = 1 << 20


def test_crashloop_answers_healthy_then_exits_1(host: Host, notifications: Notifications) -> None:
    """The first /health is 200 (what a promote checks); moments later the process exits 1."""
    api = host.promote("api", "crashloop")
    gateway = host.start(api, notifications)
    assert gateway.get("/health")[0] == 200
    _, err = gateway.proc.communicate(timeout=10)
    assert gateway.proc.returncode == 1
    assert "agent_cli: fault crashloop: exiting 1" in err


def test_crashloop_arms_without_a_health_check(host: Host, notifications: Notifications) -> None:
    """Restarted by systemd, nobody asks for /health: it still exits 1, a second after READY=1,
    so it loops until the start limit."""
    api = host.promote("api", "crashloop")
    gateway = host.start(api, notifications)
    started = time.monotonic()
    gateway.proc.communicate(timeout=10)
    assert gateway.proc.returncode == 1
    assert 0.9 <= time.monotonic() - started < 5


def test_memhog_exits_1_when_the_data_limit_refuses(
    host: Host, notifications: Notifications
) -> None:
    """Under RLIMIT_DATA (LimitDATA=) the allocation fails with MemoryError below the limit and
    the process exits 1, so systemd restarts it towards the start limit."""
    api = host.promote("api", "memhog")
    argv = ["prlimit", f"--data={128 * MIB}", "--", *GATEWAY]
    gateway = host.start(api, notifications, argv=argv)
    assert gateway.get("/health")[0] == 200
    _, err = gateway.proc.communicate(timeout=30)
    assert gateway.proc.returncode == 1
    refused = [line for line in err.splitlines() if "fault memhog: allocation refused" in line]
    assert len(refused) == 1
    assert int(refused[0].split(" at ")[1].split()[0]) < 128


def test_fillhome_stops_at_the_file_size_limit_and_keeps_serving(
    host: Host, notifications: Notifications
) -> None:
    """Under RLIMIT_FSIZE (LimitFSIZE=) the file in AGENT_HOME ends exactly at the limit, the
    write is refused with EFBIG (CPython ignores SIGXFSZ), and /health still answers."""
    api = host.promote("api", "fillhome")
    argv = ["prlimit", f"--fsize={8 * MIB}", "--", *GATEWAY]
    gateway = host.start(api, notifications, argv=argv)
    assert gateway.get("/health")[0] == 200
    fill = api.home / "fill.bin"
    deadline = time.monotonic() + 10
    while not (fill.exists() and fill.stat().st_size == 8 * MIB) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fill.stat().st_size == 8 * MIB
    time.sleep(0.2)
    assert gateway.get("/health")[0] == 200
    code, err = gateway.stop()
    assert code == 0
    assert f"agent_cli: fault fillhome: write refused at {8 * MIB} bytes: EFBIG" in err


def test_ignoreterm_survives_sigterm_until_killed(host: Host, notifications: Notifications) -> None:
    """READY=1 and healthy, then SIGTERM changes nothing: only SIGKILL (systemd's, at the stop
    timeout) ends it."""
    api = host.promote("api", "ignoreterm")
    gateway = host.start(api, notifications)
    assert gateway.get("/health")[0] == 200
    gateway.proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        gateway.proc.wait(timeout=1.5)
    assert gateway.get("/health")[0] == 200
    gateway.proc.kill()
    _, err = gateway.proc.communicate(timeout=10)
    assert gateway.proc.returncode == -signal.SIGKILL
    assert "agent_cli: fault ignoreterm: SIGTERM ignored" in err
