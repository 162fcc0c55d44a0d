"""``gateway run --replace`` takes over only a stale instance of the same profile.

The pidfile must name a live pid with the recorded start time and the same AGENT_HOME and
profile; a sibling's process, or a pid now used by another process, is never signalled.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.unit.releases.conftest import Host, Notifications, alive, start_time


def test_replace_takes_over_the_same_profiles_instance(
    host: Host, notifications: Notifications
) -> None:
    """The old instance gets SIGTERM, drains and exits 0; the new one serves and owns the
    pidfile."""
    api = host.promote("api")
    old = host.start(api, notifications, "--replace")
    new = host.start(api, notifications, "--replace")
    assert old.proc.wait(timeout=10) == 0
    assert new.get("/health")[1]["pid"] == new.proc.pid
    assert json.loads((api.home / "gateway.pid").read_text())["pid"] == new.proc.pid
    assert new.stop()[0] == 0


def test_without_replace_a_running_instance_is_refused(
    host: Host, notifications: Notifications
) -> None:
    """A second start without --replace exits 1 and leaves the running instance serving."""
    api = host.promote("api")
    first = host.start(api, notifications)
    second = host.start(api, notifications, wait_ready=False)
    _, err = second.proc.communicate(timeout=10)
    assert second.proc.returncode == 1
    expected = f"profile api already runs as pid {first.proc.pid}; --replace takes over"
    assert err == f"agent_cli: error: {expected}\n"
    assert first.get("/health")[1]["pid"] == first.proc.pid
    assert first.stop()[0] == 0


def write_pidfile(home: Path, pid: int, started: int, owner_home: Path, profile: str) -> None:
    record = {"pid": pid, "start_time": started, "home": str(owner_home), "profile": profile}
    (home / "gateway.pid").write_text(json.dumps(record))


@pytest.mark.parametrize("whose", ["sibling-profile", "same-name-other-home"])
def test_replace_never_touches_a_process_of_another_profile(
    host: Host,
    notifications: Notifications,
    bystander: subprocess.Popen[str],
    whose: str,
) -> None:
    """A live process recorded for another profile, or for another home, is left alone and the
    start is refused (exit 1)."""
    api = host.promote("api")
    core = host.promote("core")
    profile, owner_home = ("core", core.home) if whose == "sibling-profile" else ("api", core.home)
    write_pidfile(api.home, bystander.pid, start_time(bystander.pid), owner_home, profile)
    gateway = host.start(api, notifications, "--replace", wait_ready=False)
    _, err = gateway.proc.communicate(timeout=10)
    assert gateway.proc.returncode == 1
    assert err == (
        f"agent_cli: error: {api.home}/gateway.pid names pid {bystander.pid}, alive, serving "
        f"profile {profile!r} from {owner_home}: not this profile's instance, left alone\n"
    )
    assert alive(bystander)


def test_replace_ignores_a_reused_pid(
    host: Host, notifications: Notifications, bystander: subprocess.Popen[str]
) -> None:
    """A pidfile whose pid now belongs to a process with another start time is stale: the new
    instance starts and that process is not signalled."""
    api = host.promote("api")
    write_pidfile(api.home, bystander.pid, start_time(bystander.pid) - 1, api.home, "api")
    gateway = host.start(api, notifications, "--replace")
    assert gateway.get("/health")[1]["pid"] == gateway.proc.pid
    assert alive(bystander)
    assert gateway.stop()[0] == 0


def test_a_dead_instances_pidfile_is_replaced(host: Host, notifications: Notifications) -> None:
    """A pidfile left by a killed instance (pid gone) does not block the next start."""
    api = host.promote("api")
    first = host.start(api, notifications)
    first.proc.kill()
    first.proc.wait(timeout=10)
    assert (api.home / "gateway.pid").exists()
    second = host.start(api, notifications)
    assert json.loads((api.home / "gateway.pid").read_text())["pid"] == second.proc.pid
    assert second.stop()[0] == 0
