"""A lab's network link and sshd: a veth pair into a network namespace the caller created.

The lab end is put into a namespace of the lab's own (``agentgw-lab-<name>``, which nspawn
joins with ``--network-namespace-path``: ``--network-interface`` would refuse an interface
udev has not initialized, and these hosts run no udev), the other end into the caller's.
Both get an IPv6 ULA address of a /64 derived from the lab's name, so the addresses exist only
on that pair and no traffic leaves the machine. The sshd is OpenSSH's, run as a transient unit
inside the lab, with a host key made at boot (per run) and the root login allowed for the
caller's public key only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from agentgw import run
from agentgw.errors import AgentgwError

# Debian's openssh-server unpacked (not installed: installing it would start an sshd on the
# host); `make sshd` puts it here. A system sshd is used when present instead.
SSHD_ROOT = Path("/var/cache/agentgw/sshd/root")
SSHD_CANDIDATES = (SSHD_ROOT / "usr/sbin/sshd", Path("/usr/sbin/sshd"))
SSHD_UNIT = "agentgw-lab-sshd.service"
SSH_DIR = Path("/etc/agentgw-lab/ssh")
ULA_PREFIX = "fd61:6777"


@dataclass(frozen=True)
class LinkSpec:
    """``netns``: the caller's namespace (``ip netns add``); ``authorized_key``: the public key
    (text) allowed to log in as root."""

    netns: str
    authorized_key: str


def names(lab: str) -> tuple[str, str]:
    """The veth pair's interface names (lab end, namespace end), <= 15 characters."""
    digest = hashlib.sha256(lab.encode()).hexdigest()[:8]
    return f"agl{digest}", f"agn{digest}"


def addresses(lab: str) -> tuple[str, str]:
    """(lab address, namespace address) in the lab's own ULA /64."""
    digest = hashlib.sha256(lab.encode()).hexdigest()
    subnet = f"{ULA_PREFIX}:{digest[:4]}:{digest[4:8]}"
    # The canonical text (no leading zeros in a group): ssh looks known_hosts up by it, so a
    # group like 0e6e written as such is never found.
    return (ipaddress.IPv6Address(f"{subnet}::2").compressed,
            ipaddress.IPv6Address(f"{subnet}::1").compressed)


def find_sshd() -> Path:
    for candidate in SSHD_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise AgentgwError(
        "no sshd for the lab's link", hint="make sshd (unpacks Debian's openssh-server)"
    )


def render_sshd_config(address: str) -> str:
    return (
        f"ListenAddress [{address}]:22\n"
        f"HostKey {SSH_DIR / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {SSH_DIR / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "PidFile none\n"
    )


def check_netns(netns: str) -> None:
    if not Path("/run/netns", netns).exists():
        raise AgentgwError(
            f"network namespace {netns!r} does not exist", hint=f"ip netns add {netns}"
        )


def lab_netns(lab: str) -> str:
    return f"agentgw-lab-{lab}"


def create_pair(lab: str, netns: str) -> Path:
    """The lab's namespace and the veth pair, both ends addressed and up; returns the path
    nspawn joins."""
    check_netns(netns)
    own = lab_netns(lab)
    inside, outside = names(lab)
    address, peer = addresses(lab)
    run.run(["ip", "netns", "add", own])
    run.run(["ip", "link", "add", inside, "netns", own, "type", "veth", "peer", "name", outside,
             "netns", netns])
    for ns, dev, addr in ((own, inside, address), (netns, outside, peer)):
        run.run(["ip", "-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad"])
        run.run(["ip", "-n", ns, "link", "set", dev, "up"])
    run.run(["ip", "-n", own, "link", "set", "lo", "up"])
    return Path("/run/netns", own)


def remove_pair(lab: str, netns: str) -> None:
    """Deleting the lab's namespace deletes its veth end, and with it the caller's end."""
    _, outside = names(lab)
    if Path("/run/netns", lab_netns(lab)).exists():
        run.run(["ip", "netns", "del", lab_netns(lab)], check=False)
    if Path("/run/netns", netns).exists():
        run.run(["ip", "-n", netns, "link", "del", outside], check=False)


def write_config(root: Path, lab: str, spec: LinkSpec) -> None:
    """The sshd config and the authorized key, written into the lab's overlay root."""
    ssh = root / SSH_DIR.relative_to("/")
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "sshd_config").write_text(render_sshd_config(addresses(lab)[0]))
    keys = ssh / "authorized_keys"
    keys.write_text(spec.authorized_key.strip() + "\n")
    keys.chmod(0o600)


def host_key(root: Path) -> str:
    """The lab's sshd public host key (made at boot), for the caller's known_hosts."""
    return (root / SSH_DIR.relative_to("/") / "host_ed25519.pub").read_text().strip()


def setup_script(lab: str, sshd: Path) -> str:
    """Run inside the booted lab: make a host key, start the sshd and wait until it listens."""
    libs = os.fspath(SSHD_ROOT / "usr/lib/x86_64-linux-gnu")
    return "\n".join([
        "set -eu",
        f"mkdir -p {SSH_DIR} /run/sshd",
        f"ssh-keygen -q -t ed25519 -N '' -f {SSH_DIR / 'host_ed25519'}",
        "getent passwd sshd >/dev/null || useradd -r -M -d /run/sshd -s /usr/sbin/nologin sshd",
        f"systemd-run --quiet --unit={SSHD_UNIT} -p Type=exec "
        f"-E LD_LIBRARY_PATH={libs} {os.fspath(sshd)} -D -e -f {SSH_DIR / 'sshd_config'}",
        "for _ in $(seq 100); do",
        "  [ -n \"$(ss -H -ltn 'sport = :22')\" ] && exit 0; sleep 0.05",
        "done",
        f"journalctl -u {SSHD_UNIT} --no-pager >&2; exit 1",
    ])
