"""The Debian package on a host that never saw the checkout's venv (README "Install on a server").

A lab of its own (marker ``lab``: booted from the host), whose /opt/agentgw is an empty tmpfs
mounted before anything runs there, gets the .deb that ``make package`` built installed with
``apt install ./agentgw_*.deb`` (offline: its Depends are the host's packages). Then the README's
server steps run: a profile applied, a release added and promoted, status, verify, the
registry, the sandbox broker and an exec. A newer build installed over it keeps the gateway's
MainPID, the operator's config, the releases and the history and restarts agentgw's own
services; ``apt remove`` stops those but not the gateway; a plain purge keeps the operator's
data and drops the package's users; the purge asked for with ``purge-all`` leaves no unit, user,
group or file of agentgw's. The modules run in order, on one lab.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgw import run
from agentgw.lab.machine import TARGET, Lab, booted
from agentgw.lab.spec import LabSpec

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
DEBS = Path(os.environ.get("AGENTGW_DEBS", REPO / "dist" / "package-debs"))
PROFILE = "mcp"
APT = "DEBIAN_FRONTEND=noninteractive apt-get -o Dpkg::Use-Pty=0 -y -q"


def debs() -> tuple[Path, Path]:
    """The first build and the newer one (sorted by dpkg's version order)."""
    found = sorted(DEBS.glob("agentgw_*_amd64.deb"))
    if not found and "AGENTGW_DEBS" not in os.environ:
        pytest.skip(f"no .deb in {DEBS}: make package builds two and runs this test")
    if len(found) != 2:
        pytest.fail(f"expected two builds of the .deb in {DEBS} (make package), found {found}")
    older, newer = found
    check = run.run(["dpkg", "--compare-versions", version(newer), "gt", version(older)],
                    check=False)
    return (older, newer) if check.returncode == 0 else (newer, older)


def version(deb: Path) -> str:
    return deb.name.split("_")[1]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    debs()  # before booting: skipped or failed at once when the builds are missing
    spec = LabSpec(name=f"pkg-{uuid.uuid4().hex[:8]}", binds=(REPO,))
    with booted(spec) as machine:
        # The checkout's venv does not exist on this host: nothing there can use it.
        machine.exec(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/opt/agentgw"])
        # A server's apt starts services; this machine's Docker-made policy-rc.d (exit 101)
        # forbids it (removed in the lab's overlay only).
        machine.exec(["rm", "-f", "/usr/sbin/policy-rc.d"])
        yield machine


def sh(lab: Lab, script: str, *, want: int = 0, timeout: float = 300) -> str:
    """Run a bash script in the lab; AssertionError with its output unless it exits ``want``."""
    done = lab.exec(["bash", "-euo", "pipefail", "-c", script], check=False, timeout=timeout,
                    cwd=DEBS)
    if done.returncode != want:
        raise AssertionError(f"$ {script}\nexit {done.returncode} (want {want})\n"
                             f"{done.stdout}\n{done.stderr}")
    return done.stdout


def main_pid(lab: Lab, unit: str) -> int:
    return int(sh(lab, f"systemctl show -P MainPID {unit}").strip())


def state(lab: Lab) -> dict[str, str]:
    """What an upgrade must keep: the operator's config, releases, current, history."""
    return {
        "etc": sh(lab, "cd /etc/agentgw && find . -type f -print0 | sort -z | "
                       "xargs -0 sha256sum"),
        "releases": sh(lab, "ls /opt/agent/releases"),
        "current": sh(lab, f"readlink /opt/agent/gateways/{PROFILE}/current"),
        "history": sh(lab, "cat /var/lib/agentgw/history.jsonl"),
        "proofs": sh(lab, "ls /var/lib/agentgw/proofs"),
    }


def test_install_then_the_readme_server_steps(lab: Lab) -> None:
    """apt installs the .deb offline on a host without /opt/agentgw/venv: the units run the
    bundled venv's agentgw and none is shadowed in /etc, the users, group, man pages and
    completion are there and no dev extra is; then apply, release add, promote, status,
    verify, the registry and an exec in the sandbox (gVisor) all work."""
    older, _ = debs()
    sh(lab, "test ! -e /opt/agentgw/venv && ! command -v agentgw")
    sh(lab, f"apt install -y ./{older.name}", timeout=600)
    assert "/usr/lib/agentgw/bin/agentgw\n" == sh(lab, "readlink -f /usr/bin/agentgw")
    assert sh(lab, "systemctl show -P ExecStart agentgw-registry.service").count(
        "path=/usr/lib/agentgw/bin/agentgw ") == 1
    # The registry is socket-activated: it starts on the first connection (curl below).
    for unit in ("agentgw-registry.socket", "agentgw-cli.socket", "agentgw-verify.timer"):
        assert "active\n" == sh(lab, f"systemctl is-active {unit}"), unit
        assert "enabled\n" == sh(lab, f"systemctl is-enabled {unit}"), unit
    sh(lab, "getent group agentgw && getent passwd agentgw-sandbox")
    assert "" == sh(lab, "ls /etc/systemd/system | grep -E '^agent(gw-|-gateway@)' "
                         f"| grep -vx {TARGET} || true")
    assert "no changes" in sh(lab, "agentgw init")
    # The admin group's rules, installed by init for the package's venv.
    sudoers = sh(lab, "visudo -cqf /etc/sudoers.d/agentgw && cat /etc/sudoers.d/agentgw")
    assert "/usr/lib/agentgw/bin/agentgw ^promote" in sudoers and "/opt/agentgw" not in sudoers
    sh(lab, "grep -q 'isInGroup(\"agentgw\")' /etc/polkit-1/rules.d/50-agentgw.rules")
    assert "" == sh(lab, "ls /usr/lib/agentgw/lib/python3.11/site-packages | "
                         "grep -iE '^(pytest|hypothesis|httpx|ruff|mypy|schemathesis)' || true")
    sh(lab, "man -w agentgw agentgw-promote && test -s /usr/share/zsh/vendor-completions/_agentgw"
            " && test -s /usr/share/fish/vendor_completions.d/agentgw.fish")
    completion = sh(lab, ". /usr/share/bash-completion/completions/agentgw && "
                         "COMP_WORDS='agentgw prom' COMP_CWORD=1 _AGENTGW_COMPLETE=bash_complete "
                         "agentgw")
    assert "plain,promote" in completion.splitlines()

    # The README's three commands (a release tree of the demo runtime as build/). No
    # allow_emulation: without KVM the packaged broker runs its jobs under gVisor (runsc).
    sha = sh(lab, f"{REPO}/scripts/build-releases --out /root/rel | awk '$1==\"good\"{{print $2}}'"
             ).strip()
    sh(lab, "cp /usr/share/doc/agentgw/examples/gateways/mcp.yaml /etc/agentgw/gateways/ "
            "&& agentgw apply")
    sh(lab, f"agentgw release add /root/rel/good --sha {sha} --label mcp "
            f"&& agentgw promote {PROFILE} {sha}", timeout=120)

    row = json.loads(sh(lab, f"agentgw status {PROFILE} --json"))["profiles"][0]
    assert ("active", "yes") == (row["active_state"], row["aligned"]["state"]), row
    # root's promote and status ran in the CLI fork server (agentgw-cli.socket, enabled)
    ran = sh(lab, "journalctl -u agentgw-cli.service -o cat --no-pager | grep '^pid '")
    assert "agentgw promote" in ran and "agentgw status" in ran, ran
    # Day-2 without root works with the package: a member of agentgw reads through sudo.
    member = sh(lab, "useradd --system -G agentgw alice && setpriv --reuid=alice --regid=alice "
                     f"--init-groups agentgw status {PROFILE} --json")
    assert [PROFILE] == [r["profile"] for r in json.loads(member)["profiles"]]
    proof = json.loads(sh(lab, f"agentgw verify {PROFILE} --json", timeout=300))["proofs"][0]
    assert proof["isolated"] is True, proof
    profiles = json.loads(sh(lab, "curl -sS --fail --unix-socket /run/agentgw/registry.sock "
                                  "http://registry/v1/profiles"))["profiles"]
    assert [PROFILE] == [p["profile"] for p in profiles]
    sh(lab, "agentgw sandbox build && systemctl enable --now agentgw-sandbox", timeout=600)
    out = sh(lab, f"agentgw exec {PROFILE} -- sh -c 'echo hi from the sandbox; exit 3'", want=3,
             timeout=180)
    assert "hi from the sandbox" in out
    status = sh(lab, "systemctl show -P StatusText agentgw-sandbox.service")
    assert "on gvisor (user-space-kernel) in job units" in status, status


def test_a_newer_build_keeps_the_gateway_and_every_record(lab: Lab) -> None:
    """apt install of the newer build: the gateway keeps its MainPID, config, releases,
    current, history and proofs are byte for byte the same, the history chain verifies, and
    agentgw's own running services (registry, broker) were restarted onto the new venv."""
    _, newer = debs()
    gateway = f"agent-gateway@{PROFILE}.service"
    before = state(lab)
    pids = {u: main_pid(lab, u) for u in (gateway, "agentgw-registry.service",
                                          "agentgw-sandbox.service", "agentgw-cli.service")}
    assert all(pids.values()), pids
    sh(lab, f"apt install -y ./{newer.name}", timeout=600)
    assert version(newer) == sh(lab, "dpkg-query -W -f '${Version}' agentgw")
    assert pids[gateway] == main_pid(lab, gateway)
    for unit in ("agentgw-registry.service", "agentgw-sandbox.service", "agentgw-cli.service"):
        assert "active\n" == sh(lab, f"systemctl is-active {unit}")
        assert pids[unit] != main_pid(lab, unit), unit
    assert before == state(lab)
    sh(lab, "agentgw history --verify")
    # ... through the restarted fork server (the new venv's code)
    server = main_pid(lab, "agentgw-cli.service")
    assert "agentgw history" in sh(lab, f"journalctl _PID={server} -o cat --no-pager")
    row = json.loads(sh(lab, f"agentgw status {PROFILE} --json"))["profiles"][0]
    assert ("active", "yes") == (row["active_state"], row["aligned"]["state"]), row


def test_remove_then_purge_keep_the_gateway_and_the_operators_data(lab: Lab) -> None:
    """apt remove stops agentgw's services, never the gateway; a plain purge drops the
    package's units, users and group but keeps config, state, releases and the running
    gateway; installing again picks all of it up."""
    _, newer = debs()
    gateway = f"agent-gateway@{PROFILE}.service"
    pid = main_pid(lab, gateway)
    before = state(lab)
    sh(lab, f"{APT} remove agentgw", timeout=300)
    for unit in ("agentgw-registry.service", "agentgw-sandbox.service", "agentgw-verify.timer"):
        assert "active\n" != sh(lab, f"systemctl is-active {unit} || true"), unit
    assert pid == main_pid(lab, gateway)
    sh(lab, f"{APT} purge agentgw", timeout=300)
    sh(lab, "! getent passwd agentgw-sandbox && ! getent group agentgw "
            "&& ! getent group agentgw-sandbox && test ! -e /usr/lib/agentgw "
            "&& test ! -e /usr/lib/systemd/system/agentgw-registry.service")
    assert pid == main_pid(lab, gateway)
    assert before == state(lab)
    sh(lab, f"apt install -y ./{newer.name}", timeout=600)
    sh(lab, "agentgw history --verify && systemctl is-active agentgw-registry.socket && curl -sS "
            "--fail --unix-socket /run/agentgw/registry.sock http://registry/v1/profiles")
    assert pid == main_pid(lab, gateway)


def test_purge_all_leaves_nothing_of_agentgw(lab: Lab) -> None:
    """touch /etc/agentgw/purge-all, apt purge: no unit (loaded or on disk), user, group or
    file of agentgw's is left, the gateway's and its journal's included."""
    # Every file the package installed (directories aside: /usr/share/man/man1 and the like).
    shipped = sh(lab, "dpkg -L agentgw | while read -r f; do [ -d \"$f\" ] || echo \"$f\"; "
                      "done | tee /root/agentgw.files").splitlines()
    assert "/usr/lib/systemd/system/agentgw-registry.socket" in shipped and len(shipped) > 1000
    sh(lab, f"touch /etc/agentgw/purge-all && {APT} purge agentgw", timeout=300)
    assert "" == sh(lab, "while read -r f; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then "
                         "echo \"$f\"; fi; done < /root/agentgw.files")
    sh(lab, "! dpkg-query -W agentgw 2>/dev/null | grep -q .")
    units = sh(lab, "{ systemctl list-units --all --plain --no-legend 'agent*' "
                    "'systemd-journald*@agentgw-*'; systemctl list-unit-files --no-legend "
                    f"'agent*'; }} | grep -v '^{TARGET} ' || true")
    assert "" == units
    for name in ("agentgw", "agentgw-sandbox", f"agent-{PROFILE}"):
        sh(lab, f"getent passwd {name}", want=2)
        sh(lab, f"getent group {name}", want=2)
    left = sh(lab, "ls -d /etc/agentgw /var/lib/agentgw /opt/agent /usr/lib/agentgw "
                   "/usr/bin/agentgw /run/agentgw /var/cache/agentgw /usr/share/doc/agentgw "
                   "/usr/lib/sysusers.d/agentgw.conf /usr/lib/tmpfiles.d/agentgw.conf "
                   "/etc/sudoers.d/agentgw /etc/polkit-1/rules.d/50-agentgw.rules "
                   "/var/log/journal/*.agentgw-* 2>/dev/null || true")
    assert "" == left
    found = sh(lab, "find /etc/systemd /usr/lib/systemd /var/lib/systemd "
                    "/usr/share/man/man1 /usr/share/bash-completion "
                    "\\( -name '*agentgw*' -o -name 'agent-gateway*' \\) "
                    f"-not -name {TARGET} -print")
    assert "" == found
