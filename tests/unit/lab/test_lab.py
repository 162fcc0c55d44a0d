"""The lab, driven from the host: boots a real systemd, runs commands, leaves nothing behind."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import psutil
import pytest

from agentgw.errors import AgentgwError
from agentgw.lab.machine import Lab, booted
from agentgw.lab.spec import DEFAULT_BASE, LabSpec, check_name

REPO = Path(__file__).resolve().parents[3]
AGENTGW = Path("/opt/agentgw/venv/bin/agentgw")


def lab_mounts(name: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [line.split()[4] for line in f if f"/{name}/" in line.split()[4] + "/"]


def nspawn_pids(name: str) -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "systemd-nspawn" and name in (p.info["cmdline"] or [])
    ]


@pytest.mark.lab
def test_lab_runs_real_systemd_and_exec_reports_exit_codes(lab: Lab) -> None:
    """Inside the lab systemd is PID 1 and running; exit codes and output pass through."""
    assert lab.exec(["systemctl", "is-system-running"]).stdout.strip() == "running"
    assert lab.exec(["readlink", "/proc/1/exe"]).stdout.strip().endswith("/systemd")
    assert lab.exec(["sh", "-c", "exit 7"], check=False).returncode == 7
    assert lab.exec(["printenv", "AGENTGW_IN_LAB"]).stdout.strip() == "1"


@pytest.mark.lab
def test_lab_writes_stay_inside_and_checkout_is_bound(lab: Lab, tmp_path: Path) -> None:
    """A write to /etc inside never reaches the host; the checkout is shared both ways."""
    marker = f"/etc/agentgw-lab-marker-{uuid.uuid4().hex}"
    lab.exec(["touch", marker])
    assert not Path(marker).exists()
    assert lab.exec(["test", "-e", marker], check=False).returncode == 0
    shared = REPO / f".lab-bind-{uuid.uuid4().hex}"
    try:
        lab.exec(["touch", str(shared)])
        assert shared.exists()
    finally:
        shared.unlink(missing_ok=True)


@pytest.mark.lab
def test_cli_up_exec_down_leaves_no_mount_or_process() -> None:
    """`agentgw lab up && lab exec -- systemctl is-system-running && lab down` prints running
    and leaves no lab mount and no nspawn process behind."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    try:
        up = subprocess.run([AGENTGW, "lab", "up", "--name", name], capture_output=True, text=True)
        assert up.returncode == 0, up.stderr
        ex = subprocess.run(
            [AGENTGW, "lab", "exec", "--name", name, "--", "systemctl", "is-system-running"],
            capture_output=True,
            text=True,
        )
        assert ex.stdout.strip() == "running"
        assert nspawn_pids(name)
    finally:
        down = subprocess.run(
            [AGENTGW, "lab", "down", "--name", name], capture_output=True, text=True
        )
    assert down.returncode == 0, down.stderr
    assert lab_mounts(name) == []
    assert nspawn_pids(name) == []
    assert not (DEFAULT_BASE / name).exists()


@pytest.mark.lab
def test_failure_inside_the_with_block_still_tears_down() -> None:
    """An exception while the lab is up removes every mount and process (try/finally path)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError, match="boom"), booted(LabSpec(name=name, binds=(REPO,))):
        assert nspawn_pids(name)
        raise RuntimeError("boom")
    assert lab_mounts(name) == []
    assert nspawn_pids(name) == []


@pytest.mark.lab
def test_down_repairs_a_lab_whose_cli_was_killed() -> None:
    """A lab whose `up` process was SIGKILLed mid-boot is fully removed by the next `down`."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([AGENTGW, "lab", "up", "--name", name])
    try:
        for _ in range(200):
            if lab_mounts(name):
                break
            psutil.Process(proc.pid).wait(0.02) if not psutil.pid_exists(proc.pid) else None
        proc.kill()
        proc.wait()
    finally:
        subprocess.run([AGENTGW, "lab", "down", "--name", name], check=True, capture_output=True)
    assert lab_mounts(name) == []
    assert nspawn_pids(name) == []


def test_lab_names_are_validated() -> None:
    """A lab name that could escape its state directory is refused as bad input (exit 2)."""
    for bad in ("../x", "A", "", "x" * 40, "a/b"):
        with pytest.raises(AgentgwError) as err:
            check_name(bad)
        assert err.value.code == 2
