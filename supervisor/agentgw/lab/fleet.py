"""Three (or n) lab hosts reachable over real ssh from a network namespace, and ansible-playbook
run from that namespace: the set-up of the fleet test (tests/unit/fleet) and benchmark
(benchmarks/bench_fleet.py). ``repo`` is the checkout: its ``fleet/`` collection and
``scripts/build-releases``, bound into every lab.

Per run: a network namespace, a client key, one lab per host with a veth link into the
namespace and an sshd (its host key made at boot, written to this run's known_hosts).
Everything is removed on exit, also when the body fails.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentgw import run
from agentgw.lab.link import LinkSpec
from agentgw.lab.machine import Lab, booted
from agentgw.lab.spec import LabSpec

FLEET_VENV = Path(os.environ.get("AGENTGW_FLEET_VENV", "/opt/agentgw/fleet-venv"))
AGENTGW = "/opt/agentgw/venv/bin/agentgw"
PROFILE = "api"
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass(frozen=True)
class Release:
    label: str
    sha: str
    tarball: Path

    @property
    def signature(self) -> Path:
        """Made once, off-host, by ``agentgw release sign`` (sign_off_host)."""
        return self.tarball.with_name(self.tarball.name + ".sig")

    def extra_vars(self) -> list[str]:
        return ["-e", f"release_tarball={self.tarball}", "-e", f"release_sha={self.sha}",
                "-e", f"release_label={self.label}", "-e", f"release_signature={self.signature}"]


def sign_off_host(work: Path, releases: dict[str, Release]) -> str:
    """Sign every release once, here (CI), with a key made for this run, then delete the
    private half before any lab boots: the hosts only ever get the public key, returned."""
    key = work / "ci" / "release.key"
    key.parent.mkdir(mode=0o700)
    run.run([AGENTGW, "release", "keygen", "--out", key])
    try:
        for release in releases.values():
            run.run([AGENTGW, "release", "sign", release.tarball, "--sha", release.sha,
                     "--label", release.label, "--key", key, "--out", release.signature])
    finally:
        key.unlink()
    return key.with_name("release.key.pub").read_text().strip()


def signing_vars(work: Path) -> list[str]:
    """bootstrap.yml's extra var, as the README gives it: trust the off-host public key."""
    return ["-e", f"agentgw_trusted_pubkey_file={work / 'ci' / 'release.key.pub'}"]


def tampered(work: Path, release: Release) -> Release:
    """The same release with one byte of one file changed, beside the original signature."""
    out = work / f"{release.label}-tampered" / release.tarball.name
    out.parent.mkdir()
    changed = False
    with tarfile.open(release.tarball) as src, tarfile.open(out, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            body = data.read() if data is not None else b""
            if body and not changed:
                body = bytes([body[0] ^ 0x01]) + body[1:]
                changed = True
            dst.addfile(member, io.BytesIO(body) if member.isfile() else None)
    if not changed:
        raise ValueError(f"{release.tarball}: no file to change")
    shutil.copyfile(release.signature, out.with_name(out.name + ".sig"))
    return Release(label=release.label, sha=release.sha, tarball=out)


@dataclass
class Fleet:
    netns: str
    labs: list[Lab]
    inventory: Path
    work: Path
    collection: Path  # the repository's fleet/

    def playbook(self, name: str, *args: str,
                 env_extra: dict[str, str] | None = None) -> run.Completed:
        env = {
            "PATH": f"{FLEET_VENV / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.fspath(self.work),
            "ANSIBLE_CONFIG": os.fspath(self.collection / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCAL_TEMP": os.fspath(self.work / "ansible-tmp"),
            **(env_extra or {}),
        }
        argv = ["ip", "netns", "exec", self.netns, os.fspath(FLEET_VENV / "bin/ansible-playbook"),
                "-i", os.fspath(self.inventory),
                os.fspath(self.collection / "playbooks" / name), *args]
        return run.run(argv, env=env, cwd=self.collection, check=False, timeout=600)

    def agentgw(self, lab: Lab, *args: str) -> run.Completed:
        """agentgw on that host itself (not through Ansible)."""
        return lab.exec([AGENTGW, *args], check=False, timeout=120)

    def status(self, lab: Lab) -> dict[str, object]:
        row = json.loads(self.agentgw(lab, "status", PROFILE, "--json").stdout)["profiles"][0]
        if not isinstance(row, dict):
            raise AssertionError(f"agentgw status --json: not a row: {row!r}")
        return row

    def main_pid(self, lab: Lab) -> int:
        out = lab.exec(["systemctl", "show", "-P", "MainPID", f"agent-gateway@{PROFILE}.service"])
        return int(out.stdout.strip())

    def releases(self, lab: Lab) -> list[str]:
        doc = json.loads(self.agentgw(lab, "release", "list", "--json").stdout)
        return [str(r["name"]) for r in doc["releases"]]


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP per host: ok, changed, unreachable, failed."""
    return {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]),
                   "failed": int(m[5])} for m in RECAP.finditer(stdout)}


def build_releases(repo: Path, work: Path) -> dict[str, Release]:
    """The demo runtime's good and crash trees (scripts/build-releases), as tarballs."""
    out = run.run([repo / "scripts/build-releases", "--out", work / "build"]).stdout
    found: dict[str, Release] = {}
    for line in out.splitlines():
        label, sha, directory = line.split()
        if label not in ("good", "crash"):
            continue
        tarball = work / f"{label}.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            for entry in sorted(Path(directory).iterdir()):
                tar.add(entry, arcname=entry.name)
        found[label] = Release(label=label, sha=sha, tarball=tarball)
        if label == "good":
            # A second good release (the benchmark moves between the two): the same tree plus
            # a file, under A's sha with another first digit.
            with tarfile.open(work / "good2.tar.gz", "w:gz") as tar:
                for entry in sorted(Path(directory).iterdir()):
                    tar.add(entry, arcname=entry.name)
                changes = work / "CHANGES"
                changes.write_text("second build\n")
                tar.add(changes, arcname="CHANGES")
            sha2 = ("c" if sha.startswith("b") else "b") + sha[1:]
            found["good2"] = Release(label="good2", sha=sha2, tarball=work / "good2.tar.gz")
    return found


@contextmanager
def fleet(repo: Path, work: Path, hosts: int = 3) -> Iterator[Fleet]:
    run_id = uuid.uuid4().hex[:6]
    netns = f"agentgw-fleet-{run_id}"
    key = work / "id_ed25519"
    run.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"fleet-{run_id}",
             "-f", key])
    with ExitStack() as stack:
        run.run(["ip", "netns", "add", netns])
        stack.callback(run.run, ["ip", "netns", "del", netns], check=False)
        run.run(["ip", "-n", netns, "link", "set", "lo", "up"])
        link = LinkSpec(netns=netns, authorized_key=key.with_suffix(".pub").read_text())
        labs = [stack.enter_context(booted(LabSpec(name=f"fleet-{run_id}-{i}", binds=(repo,),
                                                   link=link)))
                for i in range(1, hosts + 1)]
        known = work / "known_hosts"
        known.write_text("".join(f"{lab.state.address} {lab.state.host_key}\n" for lab in labs))
        # ssh's control sockets: a short path (a unix socket path is at most 107 bytes).
        control = Path(f"/run/agentgw-fleet-{run_id}")
        control.mkdir(mode=0o700)
        stack.callback(shutil.rmtree, control, ignore_errors=True)
        ssh_args = (f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes "
                    f"-o ControlMaster=auto -o ControlPersist=60s -o ControlPath={control}/%C")
        inventory = work / "hosts.ini"
        inventory.write_text(
            "[agentgw_hosts]\n"
            + "".join(f"{lab.name} ansible_host={lab.state.address}\n" for lab in labs)
            + "\n[agentgw_hosts:vars]\nansible_user=root\n"
            f"ansible_ssh_private_key_file={key}\n"
            f"ansible_ssh_common_args='{ssh_args}'\n"
            f"agentgw_profiles=[\"{PROFILE}\"]\n"
        )
        # The ssh masters end before their labs do (registered last, so run first).
        for lab in labs:
            stack.callback(run.run, [
                "ip", "netns", "exec", netns, "ssh", "-o", f"ControlPath={control}/%C",
                "-O", "exit", f"root@{lab.state.address}"], check=False)
        yield Fleet(netns=netns, labs=labs, inventory=inventory, work=work,
                    collection=repo / "fleet")
