"""The probe program and the property plumbing around it, without systemd.

The program runs here unsandboxed (as the test's user), so every attempt that the gateway's
sandbox would deny succeeds: that proves it reports successes as successes, the half of the
proof a lab cannot show on a well-configured host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from agentgw.bus import wire
from agentgw.proofs.host import cgroup_mode, judge_capabilities
from agentgw.proofs.probes import (
    COPIED,
    Listeners,
    normalise,
    parse_answers,
    probe_argv,
    sandbox_of,
    transient_properties,
)

# As systemd 252 returns them over D-Bus (decoded by bus/wire.py).
RAW = {
    "User": "agent-api",
    "PrivateTmp": True,
    "ReadWritePaths": ["/opt/agent/gateways/api/logs", "/opt/agent/gateways/api/home"],
    "IPAddressDeny": [(2, [0, 0, 0, 0], 0), (10, [0] * 16, 0)],
    "IPAddressAllow": [(2, [127, 77, 0, 3], 32), (2, [198, 51, 100, 0], 24)],
    "SystemCallFilter": (True, ["write", "read"]),
    "RestrictAddressFamilies": (True, ["AF_UNIX", "AF_INET"]),
    "DeviceAllow": [("char-rtc", "r")],
    "CapabilityBoundingSet": 0,
    "RootDirectory": "",
    "BindPaths": [],
}


def test_sandbox_properties_normalise_to_stable_json() -> None:
    """IP lists become sorted CIDR strings, flagged lists a {allow, names} object, plain lists
    are sorted: the gateway's and the probe's sets compare by value."""
    sandbox = sandbox_of(RAW)
    assert ["0.0.0.0/0", "::/0"] == sandbox["IPAddressDeny"]
    assert ["127.77.0.3/32", "198.51.100.0/24"] == sandbox["IPAddressAllow"]
    assert {"allow": True, "names": ["read", "write"]} == sandbox["SystemCallFilter"]
    assert ["/opt/agent/gateways/api/home", "/opt/agent/gateways/api/logs"] == (
        sandbox["ReadWritePaths"])
    assert [["char-rtc", "r"]] == sandbox["DeviceAllow"]
    assert json.loads(json.dumps(sandbox)) == sandbox


def test_transient_properties_carry_every_set_value_and_encode() -> None:
    """Each set property becomes a StartTransientUnit property that bus/wire.py can encode
    (its table knows every copied property); unset ones are left to systemd's default."""
    props = transient_properties(sandbox_of(RAW))
    assert set(COPIED) <= set(wire.SIGNATURES)
    assert {"User", "PrivateTmp", "ReadWritePaths", "IPAddressDeny", "IPAddressAllow",
            "SystemCallFilter", "RestrictAddressFamilies", "DeviceAllow",
            "CapabilityBoundingSet"} == set(props)
    assert (True, ["read", "write"]) == props["SystemCallFilter"]
    assert [("char-rtc", "r")] == props["DeviceAllow"]
    assert 0 == props["CapabilityBoundingSet"]
    wire.unit_properties(props)


def test_a_reset_list_reads_as_unset() -> None:
    """An IPAddressDeny= reset in a drop-in reads back empty and is not copied: the probe gets
    the same (absent) deny list as the gateway."""
    assert [] == normalise("IPAddressDeny", [])
    assert "IPAddressDeny" not in transient_properties(sandbox_of({"IPAddressDeny": []}))


def run_probe_program(spec: dict[str, object]) -> dict[str, Any]:
    argv = probe_argv(sys.executable, spec)
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
    answers = parse_answers(done.stdout)
    assert answers is not None, done.stderr
    return answers


def test_probe_program_reports_successes_when_nothing_denies(tmp_path: Path) -> None:
    """Unsandboxed, the program lists a directory, reads a file, creates a file, reaches a
    listener over TCP and UDP, and runs a tool; each is reported as such."""
    (tmp_path / "home").mkdir()
    (tmp_path / "env").write_text("A=1\n")
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    with Listeners() as net:
        target = net.open("own address", "127.0.0.1", "allow")
        answers = run_probe_program({
            "read": [{"path": str(tmp_path / "home"), "op": "listdir"},
                     {"path": str(tmp_path / "env"), "op": "read"}],
            "connect": [target.spec()],
            "tools": [{"tool": "tool", "paths": [str(tool)]}],
            "write": [str(tmp_path)],
            "processes": [{"profile": "self", "pid": os.getpid()}],
            "timeout": 2.0,
        })
        received = net.received(target)
    assert [True, True] == [r["ok"] for r in answers["read"]]
    connect = answers["connect"][0]
    assert ("connected", "sent", True) == (connect["tcp"], connect["udp"], received)
    attempt = answers["tools"][0]["attempts"][0]
    assert ("opened", "ran (exit 0)") == (attempt["open"], attempt["exec"])
    assert answers["write"][0]["ok"] is True
    assert [] == [p.name for p in tmp_path.iterdir() if p.name.startswith(".agentgw-probe")]
    assert answers["processes"][0]["visible"] is True


def test_probe_program_reports_errno_names(tmp_path: Path) -> None:
    """Failures come back as errno names: a missing path is ENOENT, a missing tool is absent
    everywhere, a write into a missing directory ENOENT."""
    missing = str(tmp_path / "missing")
    answers = run_probe_program({
        "read": [{"path": missing, "op": "listdir"}],
        "tools": [{"tool": "agentgw-no-such-tool", "paths": [missing]}],
        "write": [missing],
        "devices": [missing],
    })
    assert "ENOENT" == answers["read"][0]["errno"]
    tool = answers["tools"][0]
    assert (None, "ENOENT", "ENOENT") == (tool["which"], tool["attempts"][0]["open"],
                                          tool["attempts"][0]["exec"])
    assert "ENOENT" == answers["write"][0]["errno"]
    assert "ENOENT" == answers["devices"][0]["errno"]


def test_probe_program_is_stdlib_only() -> None:
    """The probe runs under the gateway's interpreter with -I -S: it may import nothing of
    agentgw and nothing outside the standard library."""
    source = probe_argv("python3", {})[4]
    imports = [line.split()[1] for line in source.splitlines()
               if line.startswith(("import ", "from "))]
    assert [m for m in imports if m.split(".")[0] not in sys.stdlib_module_names
            and m != "__future__"] == []


def test_cgroup_mode_from_mounts() -> None:
    """cgroup2 on /sys/fs/cgroup is unified; v1 there with cgroup2 below is hybrid."""
    unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n"
    hybrid = ("tmpfs /sys/fs/cgroup tmpfs ro 0 0\n"
              "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    legacy = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"
    assert ["unified", "hybrid", "legacy", "unknown"] == [
        cgroup_mode(m) for m in (unified, hybrid, legacy, "")]


def test_host_capabilities_are_decided_by_behaviour() -> None:
    """A connect that gets through under IPAddressDeny=any means the BPF firewall is off; PID 1
    visible under ProtectProc=invisible means no hidepid."""
    blocked = {"connect": [{"tcp": "timeout", "udp": "EPERM"}],
               "processes": [{"pid": 1, "visible": False}]}
    through = {"connect": [{"tcp": "connected", "udp": "sent"}],
               "processes": [{"pid": 1, "visible": True}]}
    assert ("enforced", "enforced") == judge_capabilities(blocked, False)
    assert ("not-enforced", "not-enforced") == judge_capabilities(through, True)
    assert ("unknown", "unknown") == judge_capabilities(None, False)
