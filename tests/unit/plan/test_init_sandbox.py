"""init installs the sandbox broker: its user, its unit, the gateways' client, its state dir."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

from agentgw.model.actions import EnsureDir, EnsureGroup, EnsureUser, UnitAction, WriteFile
from agentgw.paths import Layout
from agentgw.plan.host import Observed, init_files, plan_init
from agentgw.sandbox import image, jobclient
from tests.unit.plan.test_host_plan import after

REPO = Path(__file__).resolve().parents[3]
UNIT = REPO / "systemd" / "agentgw-sandbox.service"


def test_init_plans_the_broker_once(tmp_path: Path) -> None:
    """The agentgw-sandbox user and group, the unit (0644, as shipped), the client in _lib
    (0644, the repo's launcher/sandbox_client.py), state/sandbox 0700 root; a daemon-reload
    when systemd manages the host; nothing on a re-plan; init observes those files."""
    layout = Layout(tmp_path)
    empty = Observed(users=frozenset(), groups=frozenset(), paths={}, units={})
    actions = plan_init(layout, empty, "#!launcher\n", "default\n")
    assert EnsureGroup(name="agentgw-sandbox") in actions
    assert EnsureUser(name="agentgw-sandbox", group="agentgw-sandbox",
                      home=Path("/nonexistent")) in actions
    files = {a.path: a for a in actions if isinstance(a, WriteFile)}
    unit = files[layout.unit_dir / "agentgw-sandbox.service"]
    client = files[layout.lib / "agentgw_sandbox.py"]
    assert (unit.mode, unit.content) == (0o644, UNIT.read_text())
    assert (client.mode, client.content) == (
        0o644, (REPO / "launcher" / "sandbox_client.py").read_text())
    dirs = {a.path: (a.owner, a.mode) for a in actions if isinstance(a, EnsureDir)}
    assert dirs[layout.sandbox_state] == ("root", 0o700)
    assert UnitAction(verb="daemon-reload", why="unit files changed") in actions
    assert plan_init(layout, after(actions, empty), "#!launcher\n", "default\n") == []
    assert {unit.path, client.path} <= set(init_files(layout))


def test_unit_matches_the_paths_the_code_uses() -> None:
    """The unit's records file is the one the registry reads, its ExecStart writes records to
    that stdout, it holds no capability (systemd makes the sockets: the relay socket's path is
    the one clients use, the control socket is root's alone); it has no /dev/kvm: the job
    units (agentgw-job@.service) are the ones given it, and the image cache read-only."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    layout = Layout(Path("/"))
    assert service["StandardOutput"] == f"append:{layout.state / 'sandbox' / 'execs.jsonl'}"
    assert service["ExecStart"].endswith("agentgw sandbox serve --records -")
    assert "RuntimeDirectory" not in service  # it would remove the relays' sockets on stop
    assert service["CapabilityBoundingSet"] == "" and "chown" not in UNIT.read_text()
    relay = configparser.ConfigParser(strict=False, interpolation=None)
    relay.read_string((REPO / "systemd" / "agentgw-sandbox-relay@.socket").read_text())
    assert relay["Socket"]["ListenStream"].replace("%i", "api") == str(
        layout.sandbox_socket("api"))
    assert relay["Socket"]["SocketMode"] == "0660"
    control = configparser.ConfigParser(strict=False, interpolation=None)
    control.read_string((REPO / "systemd" / "agentgw-sandbox.socket").read_text())
    assert (control["Socket"]["SocketUser"], control["Socket"]["SocketMode"]) == ("root", "0600")
    settings = UNIT.read_text().split("[Service]")[1]
    assert service["User"] == "agentgw-sandbox" and "kvm" not in settings
    units = {}
    for name in ("agentgw-job@.service", "agentgw-vmjob@.service"):
        units[name] = configparser.ConfigParser(strict=False, interpolation=None)
        units[name].optionxform = str  # type: ignore[assignment,method-assign]
        units[name].read_string((REPO / "systemd" / name).read_text())
    job, vm = units["agentgw-job@.service"]["Service"], units["agentgw-vmjob@.service"]["Service"]
    # gVisor jobs never get /dev/kvm; microVM jobs' units do, under dynamic users of their own
    assert "kvm" not in "".join(f"{k}={v}" for k, v in job.items())
    assert (vm["SupplementaryGroups"], vm["DeviceAllow"], vm["BindPaths"]) == (
        "kvm", "/dev/kvm rw", "-/dev/kvm")
    assert (job["User"], vm["User"]) == ("agj%i", "agv%i")
    assert job["BindReadOnlyPaths"] == vm["BindReadOnlyPaths"] == f"-/{image.DEFAULT_CACHE}"
    # the VM unit is made from the gVisor one (scripts/vmjob-unit): they agree
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "vmjob-unit"), "--check"],
                          check=False)
    assert made.returncode == 0, "systemd/agentgw-vmjob@.service is stale: run scripts/vmjob-unit"
    sockets = {}
    for name in ("agentgw-job.socket", "agentgw-vmjob.socket"):
        parsed = configparser.ConfigParser(strict=False, interpolation=None)
        parsed.read_string((REPO / "systemd" / name).read_text())
        sockets[name] = parsed["Socket"]["ListenStream"]
    assert sockets == {"agentgw-job.socket": str(jobclient.socket_path(Path("/"))),
                       "agentgw-vmjob.socket": str(jobclient.socket_path(Path("/"), "tcg"))}
    template = (REPO / "systemd" / "agent-gateway@.service").read_text()
    assert "kvm" not in template
