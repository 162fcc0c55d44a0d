"""Unit control over bus/: jobs are waited for, errors are mapped, many units read correctly."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgw.bus import SERVICE, Systemd, wire
from agentgw.errors import AgentgwError
from agentgw.run import run

from .conftest import WriteUnit

pytestmark = pytest.mark.integration

# Start is slow on purpose: a caller that did not wait for the job would see "activating".
SLOW_START = """\
[Service]
ExecStartPre=/bin/sleep 0.3
ExecStart=/bin/sleep infinity
"""

NEVER_STARTS = """\
[Service]
ExecStartPre=/bin/sleep 30
ExecStart=/bin/sleep infinity
"""

TEMPLATE = """\
[Service]
ExecStart=/bin/sleep infinity
"""

INSTALLABLE = """\
[Service]
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""


def active(sd: Systemd, name: str) -> tuple[str, str]:
    props = sd.unit_properties(name, names=["ActiveState", "SubState"])
    return props["ActiveState"], props["SubState"]


def test_start_restart_stop_return_after_their_job(
    sd: Systemd, tag: str, write_unit: WriteUnit
) -> None:
    """start/restart/stop return "done" only once the job finished (JobRemoved), so the state
    read right after is final: running with a new pid after restart, dead after stop."""
    name = write_unit(f"bus-slow-{tag}.service", SLOW_START)

    assert "done" == sd.start(name)
    assert ("active", "running") == active(sd, name)
    first = sd.main_pid(name)
    assert first > 0

    assert "done" == sd.restart(name)
    assert ("active", "running") == active(sd, name)
    assert sd.main_pid(name) not in (0, first)

    assert "done" == sd.stop(name)
    assert ("inactive", "dead") == active(sd, name)
    assert 0 == sd.main_pid(name)


def test_failed_start_returns_failed(sd: Systemd, tag: str, write_unit: WriteUnit) -> None:
    """A start whose command fails reports the job result "failed" instead of raising."""
    name = write_unit(f"bus-fail-{tag}.service", "[Service]\nType=oneshot\nExecStart=/bin/false\n")
    assert "failed" == sd.start(name)
    assert "failed" == active(sd, name)[0]


def test_missing_unit_is_an_error_naming_it(sd: Systemd, tag: str) -> None:
    """Starting a unit that does not exist raises AgentgwError naming the unit, with a hint."""
    name = f"bus-missing-{tag}.service"
    with pytest.raises(AgentgwError) as caught:
        sd.start(name)
    assert f"cannot start {name}: Unit {name} not found" == caught.value.message
    assert "daemon-reload" in caught.value.hint


def test_restart_timeout_is_an_error_and_the_connection_stays_usable(
    sd: Systemd, tag: str, write_unit: WriteUnit
) -> None:
    """A restart whose job outlives the timeout raises AgentgwError; the job's late
    JobRemoved does not confuse the next job on the same connection."""
    name = write_unit(f"bus-stuck-{tag}.service", NEVER_STARTS)
    with pytest.raises(AgentgwError) as caught:
        sd.restart(name, timeout=0.5)
    assert f"restart {name} did not finish within 0.5s" in caught.value.message
    assert ("activating", "start-pre") == active(sd, name)
    assert "done" == sd.stop(name)
    # Killing ExecStartPre makes the interrupted start count as failed.
    assert ("failed", "failed") == active(sd, name)


def test_properties_of_100_template_instances_match_systemctl(
    sd: Systemd, tag: str, write_unit: WriteUnit
) -> None:
    """One list_units plus property reads give, for 100 instances of a template, exactly the
    states and main pids systemctl shows for them."""
    template = write_unit(f"bus-tpl-{tag}@.service", TEMPLATE)
    names = [template.replace("@", f"@{i}") for i in range(100)]
    assert {"done"} == {sd.start(n) for n in names}

    statuses = {s.name: s for s in sd.service_statuses([f"bus-tpl-{tag}@*"])}
    shown = run(
        ["systemctl", "show", "-p", "Id,ActiveState,SubState,MainPID,NRestarts",
         f"bus-tpl-{tag}@*"]
    ).stdout
    expected = {}
    for block in shown.strip().split("\n\n"):
        p = dict(line.split("=", 1) for line in block.splitlines())
        state = (p["ActiveState"], p["SubState"], int(p["MainPID"]), int(p["NRestarts"]))
        expected[p["Id"]] = state
    actual = {
        n: (s.active_state, s.sub_state, s.main_pid, s.n_restarts) for n, s in statuses.items()
    }
    assert expected == actual
    assert sorted(names) == sorted(actual)
    assert all(s.main_pid > 0 and s.started_usec > 0 for s in statuses.values())
    assert len({s.invocation_id for s in statuses.values()}) == 100


def test_service_status_of_a_unit_without_file(sd: Systemd, tag: str) -> None:
    """Reading a unit that has no file is not an error: it reports not-found, inactive, no pid."""
    status = sd.service_status(f"bus-nofile-{tag}.service")
    assert ("not-found", "inactive", "dead", 0, None) == (
        status.load_state, status.active_state, status.sub_state, status.main_pid,
        status.memory_bytes,
    )


def test_service_properties_of_a_socket_are_an_error(sd: Systemd) -> None:
    """Asking a socket unit for Service properties is an AgentgwError naming the unit."""
    with pytest.raises(AgentgwError, match="cannot read properties of dbus.socket"):
        sd.unit_properties("dbus.socket", SERVICE, ["MainPID"])


def test_enable_and_disable_change_the_unit_file_state(
    sd: Systemd, tag: str, write_unit: WriteUnit
) -> None:
    """enable creates the [Install] symlink and disable removes it; unit_states reports the
    unit file state as systemctl does."""
    name = write_unit(f"bus-inst-{tag}.service", INSTALLABLE)
    link = Path(f"/etc/systemd/system/multi-user.target.wants/{name}")

    sd.enable([name])
    sd.daemon_reload()
    assert link.is_symlink()
    assert {name: ("inactive", "enabled")} == sd.unit_states([name])
    assert "enabled" == run(["systemctl", "is-enabled", name], check=False).stdout.strip()

    sd.disable([name])
    sd.daemon_reload()
    assert not link.exists()
    assert {name: ("inactive", "disabled")} == sd.unit_states([name])


def test_unit_states_of_a_unit_without_file(sd: Systemd, tag: str) -> None:
    """A name with no unit file reads as inactive with no unit file state."""
    name = f"bus-nofile-{tag}.service"
    assert {name: ("inactive", "")} == sd.unit_states([name])


def test_transient_unit_name_clash_is_an_error(sd: Systemd, tag: str) -> None:
    """Starting a transient unit under a name already loaded fails with a clear error and
    leaves the existing unit alone."""
    name = f"bus-clash-{tag}.service"
    assert "done" == sd.start_transient(name, {}, ["/bin/sleep", "infinity"])
    try:
        with pytest.raises(AgentgwError, match=f"a unit named {name} is already loaded"):
            sd.run_transient(name, ["/bin/true"])
        assert ("active", "running") == active(sd, name)
    finally:
        sd.stop(name)


def test_run_transient_reports_exit_status_and_output(sd: Systemd, tag: str) -> None:
    """run_transient captures stdout/stderr and the exit code, and frees the unit name."""
    name = f"bus-run-{tag}.service"
    result = sd.run_transient(name, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    assert ("failed", "exited", 3, "out\n", "err\n") == (
        result.result, result.code, result.exit_code, result.stdout, result.stderr,
    )
    assert "not-found" == sd.unit_properties(name, names=["LoadState"])["LoadState"]
    again = sd.run_transient(name, ["/bin/true"])
    assert ("done", 0) == (again.result, again.exit_code)


def test_run_transient_times_out_a_hanging_command(sd: Systemd, tag: str) -> None:
    """A command outliving run_transient's timeout is killed by systemd and reported so."""
    result = sd.run_transient(f"bus-hang-{tag}.service", ["/bin/sleep", "30"], timeout=0.5)
    assert ("failed", "killed") == (result.result, result.code)


# One accepted value for every property wire.SIGNATURES knows, so each signature is checked
# against systemd itself.
EVERY_PROPERTY: dict[str, object] = {
    "Description": "bus/ property check", "Type": "oneshot", "User": "root", "Group": "root",
    "WorkingDirectory": "/", "ProtectSystem": "strict", "ProtectHome": "read-only",
    "ProtectProc": "invisible", "ProcSubset": "pid", "CollectMode": "inactive-or-failed",
    "KillMode": "control-group", "Slice": "system.slice", "StandardInput": "null",
    "StandardOutput": "journal", "StandardError": "journal", "DevicePolicy": "closed",
    "Restart": "no", "NotifyAccess": "none", "KeyringMode": "private",
    "RemainAfterExit": False, "NoNewPrivileges": True, "PrivateTmp": True,
    "PrivateDevices": True, "PrivateNetwork": False, "PrivateUsers": False, "PrivateIPC": True,
    "PrivateMounts": True, "ProtectKernelTunables": True, "ProtectKernelModules": True,
    "ProtectKernelLogs": True, "ProtectControlGroups": True, "ProtectClock": True,
    "ProtectHostname": True, "RestrictRealtime": True, "RestrictSUIDSGID": True,
    "LockPersonality": True, "MemoryDenyWriteExecute": True, "RemoveIPC": True,
    "IPAccounting": True, "MemoryAccounting": True, "CPUAccounting": True,
    "TasksAccounting": True, "DefaultDependencies": True,
    "ReadWritePaths": ["/var/tmp"], "ReadOnlyPaths": ["/etc"], "InaccessiblePaths": ["/mnt"],
    "ExecPaths": ["/usr"], "NoExecPaths": ["/var/tmp"], "Environment": ["A=1"],
    "SupplementaryGroups": ["root"], "SystemCallArchitectures": ["native"],
    "After": ["basic.target"], "Before": ["shutdown.target"], "Wants": ["basic.target"],
    "Requires": ["basic.target"], "Conflicts": ["shutdown.target"],
    "RuntimeDirectory": ["bus-check"], "StateDirectory": ["bus-check"],
    "LogsDirectory": ["bus-check"],
    "CapabilityBoundingSet": 0, "AmbientCapabilities": 0, "RestrictNamespaces": 0,
    "MemoryMax": 256 << 20, "MemoryHigh": 200 << 20, "MemorySwapMax": 0, "TasksMax": 64,
    "CPUQuotaPerSecUSec": 500_000, "RuntimeMaxUSec": 10_000_000,
    "TimeoutStartUSec": 10_000_000, "TimeoutStopUSec": 5_000_000, "RestartUSec": 100_000,
    "StandardInputFileDescriptor": 0, "StandardOutputFileDescriptor": 1,
    "StandardErrorFileDescriptor": 2,
    "ExecStartPre": [["/bin/true"]], "ExecStartPost": [["/bin/true"]],
    "ExecStop": [["/bin/true"]],
    "IPAddressAllow": ["localhost", "10.0.0.0/8"], "IPAddressDeny": ["any"],
    "SystemCallFilter": (True, ["@system-service"]),
    "RestrictAddressFamilies": (True, ["AF_UNIX", "AF_INET"]),
    "LoadCredential": [("token", "/etc/hostname")], "UMask": 0o077, "Nice": 5,
    "SystemCallErrorNumber": 1, "DeviceAllow": [("/dev/null", "rw")],
}


def test_every_supported_property_is_accepted_by_systemd(sd: Systemd, tag: str) -> None:
    """Each property bus/ can encode has the signature systemd 252 expects: a oneshot unit
    with all of them set starts, and its command runs to success."""
    assert set(wire.SIGNATURES) - {"ExecStart"} == set(EVERY_PROPERTY)
    name = f"bus-props-{tag}.service"
    assert "done" == sd.start_transient(name, EVERY_PROPERTY, ["/bin/true"])
