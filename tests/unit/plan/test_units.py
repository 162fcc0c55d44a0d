"""The drop-in's limits: cgroup limits always, kernel rlimits as the backstop that holds where
systemd cannot enforce the cgroup ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentgw.model.host import HostConfig
from agentgw.model.profile import Profile
from agentgw.paths import Layout
from agentgw.plan.units import render_dropin, render_journald_conf, render_journald_dropin

LIMITS = ("MemoryMax=", "TasksMax=", "CPUQuota=", "LimitNPROC=", "LimitDATA=", "LimitFSIZE=")


def limits(resources: dict[str, Any], host: HostConfig) -> list[str]:
    profile = Profile.model_validate(
        {"name": "api", "mode": "cli", "listen": "127.77.0.3:8080", "resources": resources}
    )
    dropin = render_dropin(profile, host, Layout(Path("/")), [])
    return [line for line in dropin.splitlines() if line.startswith(LIMITS)]


def test_rlimits_follow_the_profile_resources() -> None:
    """tasks_max is also LimitNPROC (one user per profile), data_max is LimitDATA and file_max
    is LimitFSIZE, beside the cgroup limits."""
    resources = {
        "memory_max": "256M",
        "cpu_quota": "50%",
        "tasks_max": 64,
        "data_max": "192M",
        "file_max": "32M",
    }
    assert limits(resources, HostConfig()) == [
        "MemoryMax=256M",
        "TasksMax=64",
        "CPUQuota=50%",
        "LimitNPROC=64",
        "LimitDATA=192M",
        "LimitFSIZE=32M",
    ]


def test_without_data_and_file_caps_only_nproc_is_added() -> None:
    """data_max and file_max default to no limit: no LimitDATA or LimitFSIZE line."""
    assert limits({"tasks_max": 100}, HostConfig()) == [
        "MemoryMax=1G",
        "TasksMax=100",
        "CPUQuota=100%",
        "LimitNPROC=100",
    ]


def test_convenience_mode_has_no_nproc_limit() -> None:
    """With one user shared by every profile RLIMIT_NPROC would count the siblings' tasks too,
    so it is left out; the other rlimits are per process and stay."""
    host = HostConfig.model_validate({"isolation": "convenience"})
    assert limits({"tasks_max": 100, "file_max": "1G"}, host) == [
        "MemoryMax=1G",
        "TasksMax=100",
        "CPUQuota=100%",
        "LimitFSIZE=1G",
    ]


def test_cpus_become_cpu_affinity() -> None:
    """resources.cpus pins the gateway (CPUAffinity=); absent, no line: every CPU."""

    def dropin(resources: dict[str, Any]) -> list[str]:
        profile = Profile.model_validate(
            {"name": "api", "mode": "cli", "listen": "127.77.0.3:8080", "resources": resources})
        return render_dropin(profile, HostConfig(), Layout(Path("/")), []).splitlines()

    assert "CPUAffinity=1 3" in dropin({"cpus": [1, 3]})
    assert not [line for line in dropin({}) if line.startswith("CPUAffinity")]


def test_logs_go_to_the_profiles_own_journal() -> None:
    """LogNamespace= in the drop-in; the namespace's journald.conf caps size and rate; its
    journald runs on the profile's CPUs within the logs' CPU quota."""
    profile = Profile.model_validate({
        "name": "api", "mode": "cli", "listen": "127.77.0.3:8080", "resources": {"cpus": [1]},
        "logs": {"max_use": "64M", "rate_limit_burst": 500, "cpu_quota": "10%"}})
    assert "LogNamespace=agentgw-api" in render_dropin(
        profile, HostConfig(), Layout(Path("/")), []).splitlines()
    conf = render_journald_conf(profile).splitlines()
    assert conf[1:] == ["[Journal]", "Storage=persistent", "SystemMaxUse=64M",
                        "RateLimitIntervalSec=30s", "RateLimitBurst=500"]
    assert render_journald_dropin(profile).splitlines()[1:] == [
        "[Service]", "CPUQuota=10%", "CPUAffinity=1"]
    unpinned = profile.model_copy(update={"resources": profile.resources.model_copy(
        update={"cpus": None})})
    assert render_journald_dropin(unpinned).splitlines()[1:] == ["[Service]", "CPUQuota=10%"]
    assert Layout(Path("/")).journald_conf("api") == Path(
        "/etc/systemd/journald@agentgw-api.conf")
    assert Layout(Path("/")).journald_dropin("api") == Path(
        "/etc/systemd/system/systemd-journald@agentgw-api.service.d/50-agentgw.conf")


def readiness_lines(**fields: Any) -> list[str]:
    profile = Profile.model_validate(
        {"name": "api", "mode": "cli", "listen": "127.77.0.3:8080", **fields}
    )
    dropin = render_dropin(profile, HostConfig(), Layout(Path("/")), [])
    keys = ("Type=", "NotifyAccess=", "ExecStartPost=", "TimeoutStartSec=")
    return [line for line in dropin.splitlines() if line.startswith(keys)]


def test_readiness_health_is_the_default_and_waits_in_exec_start_post() -> None:
    """Without readiness: the unit is Type=exec and an ExecStartPost= waiter (which polls the
    health check until 200, a second under TimeoutStartSec) decides when it is started."""
    assert readiness_lines() == [
        "TimeoutStartSec=90",
        "Type=exec",
        "NotifyAccess=none",
        "ExecStartPost=",
        "ExecStartPost=/opt/agent/_lib/ready --timeout 89",
    ]
    assert readiness_lines(start_timeout_s=20.5)[-1] == (
        "ExecStartPost=/opt/agent/_lib/ready --timeout 19.5"
    )


def test_readiness_notify_accepts_ready_from_any_process_of_the_unit() -> None:
    """readiness: notify is Type=notify with NotifyAccess=all (runtimes notify from a worker or
    child, which NotifyAccess=main refuses) and no waiter."""
    assert readiness_lines(readiness="notify", start_timeout_s=30) == [
        "TimeoutStartSec=30",
        "Type=notify",
        "NotifyAccess=all",
        "ExecStartPost=",
    ]
