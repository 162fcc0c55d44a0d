"""What verify asks the probe to try as a profile, decided from the config and the status."""

from __future__ import annotations

from pathlib import Path

from agentgw.model.proof import HostFacts
from agentgw.model.status import Alignment, Isolation, ProfileStatus, ReleaseInfo
from agentgw.paths import Layout
from agentgw.proofs.verify import Scene, deny_address, probe_spec, tool_paths
from tests.unit.status.support import config


def status(profile: str, pid: int) -> ProfileStatus:
    return ProfileStatus(
        profile=profile, unit=f"agent-gateway@{profile}.service", load_state="loaded",
        active_state="active" if pid else "inactive", sub_state="running", main_pid=pid or None,
        release=ReleaseInfo(name="abc-a", path="/opt/agent/releases/abc-a"),
        aligned=Alignment(state="yes", reason=""),
        isolation=Isolation(state="unproven", reason=""),
    )


def scene(tmp_path: Path) -> Scene:
    return Scene(
        layout=Layout(Path("/")), config=config(tmp_path),
        statuses={"api": status("api", 10), "core": status("core", 20), "mcp": status("mcp", 0)},
        host=HostFacts(kernel="6.1", systemd="252", cgroup="unified", bpf_firewall="enforced",
                       protect_proc="enforced"),
        deny_host="127.77.9.9",
    )


def test_spec_probes_every_sibling_file_and_the_running_processes(tmp_path: Path) -> None:
    """As api: each sibling's home, logs, env file, profile file and credential files (running
    or not), and agentgw's config, history and host key; the running sibling's MainPID and
    PID 1; writes to /usr, /etc, _lib, its own profile dir and its release; /dev/kvm; user
    and mount namespaces."""
    sc = scene(tmp_path)
    spec = probe_spec(sc, "api", [{"target": "t"}])
    etc, state = sc.layout.etc, sc.layout.state
    creds = {s: [("read", str(p)) for p in sc.config.profiles[s].credentials.values()]
             for s in ("core", "mcp")}
    assert [
        ("core", "/opt/agent/gateways/core/home", "listdir"),
        ("core", "/opt/agent/gateways/core/logs", "listdir"),
        ("core", "/opt/agent/gateways/core/env", "read"),
        ("core", f"{etc}/gateways/core.yaml", "read"),
        *[("core", p, op) for op, p in creds["core"]],
        ("mcp", "/opt/agent/gateways/mcp/home", "listdir"),
        ("mcp", "/opt/agent/gateways/mcp/logs", "listdir"),
        ("mcp", "/opt/agent/gateways/mcp/env", "read"),
        ("mcp", f"{etc}/gateways/mcp.yaml", "read"),
        *[("mcp", p, op) for op, p in creds["mcp"]],
        ("agentgw", f"{etc}/agentgw.yaml", "read"),
        ("agentgw", f"{state}/keys/host.key", "read"),
        ("agentgw", f"{state}/history.jsonl", "read"),
    ] == [(r["profile"], r["path"], r["op"]) for r in spec["read"]]
    assert [{"profile": "core", "pid": 20}, {"profile": "pid1", "pid": 1}] == spec["processes"]
    assert ["/usr", "/etc", "/opt/agent/_lib", "/opt/agent/gateways/api",
            "/opt/agent/releases/abc-a"] == spec["write"]
    assert (["/dev/kvm"], ["user", "mnt"], [{"target": "t"}]) == (
        spec["devices"], spec["unshare"], spec["connect"])


def test_deny_address_avoids_every_address_in_use(tmp_path: Path) -> None:
    """The "not allowlisted" probe address is free of profiles and the registry."""
    cfg = config(tmp_path)
    assert "127.77.9.9" == deny_address(cfg)
    taken = config(tmp_path, registry={"tcp": "127.77.9.9:9177"})
    assert "127.77.9.10" == deny_address(taken)


def test_tool_paths_resolve_like_apply(tmp_path: Path) -> None:
    """An absolute path is kept with its resolved target; a missing bare name has none."""
    target = tmp_path / "real"
    target.write_text("")
    link = tmp_path / "tool"
    link.symlink_to(target)
    assert sorted([str(link), str(target)]) == tool_paths(str(link))
    assert [] == tool_paths("agentgw-no-such-tool")
