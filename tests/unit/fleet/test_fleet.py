"""The agentgw.fleet collection over real ssh against three lab hosts (issue 17).

Each host is a lab (real systemd) with a veth link into a namespace of this test and an sshd;
ansible-playbook runs in that namespace. The releases are signed once, here, before any lab
boots, and the private key is deleted: the hosts get only its public half. Proven: bootstrap
works and a second run changes nothing; --check (and bootstrap's --check --diff) moves nothing
and says what would; a rolling promote of a good release aligns all three, and a second one
changes nothing; a release with one byte changed is refused by every host, before any
promote; a broken release is staged everywhere, rolls back on the first host, halts the play,
and the other two keep running the good release (their own `agentgw status --json` and
MainPIDs).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from agentgw import run
from agentgw.lab.fleet import (
    FLEET_VENV,
    Fleet,
    Release,
    build_releases,
    fleet,
    recap,
    sign_off_host,
    signing_vars,
    tampered,
)

REPO = Path(__file__).resolve().parents[3]
FLEET = REPO / "fleet"

pytestmark = pytest.mark.skipif(
    not (FLEET_VENV / "bin/ansible-playbook").exists(),
    reason=f"no ansible in {FLEET_VENV} (make fleet-venv)",
)


def fatal(result: run.Completed) -> str:
    """The failure lines of an ansible-playbook run and its end, for assertion messages."""
    lines = [line for line in result.stdout.splitlines() if line.startswith("fatal")]
    return "\n".join(lines) + "\n" + result.stdout[-2500:] + result.stderr[-1500:]


def release_of(row: dict[str, object]) -> str:
    release = row["release"]
    assert isinstance(release, dict)
    return str(release["sha"])


def aligned(row: dict[str, object]) -> str:
    state = row["aligned"]
    assert isinstance(state, dict)
    return str(state["state"])


def check_runs(f: Fleet, tmp_path: Path, boot: list[str], extra: list[str]) -> None:
    """bootstrap --check --diff shows a changed profile file's diff; rolling-promote --check
    says each host would move; neither changes a thing."""
    gateways = tmp_path / "gateways"
    gateways.mkdir()
    api = (REPO / "gateways/api.yaml").read_text()
    (gateways / "api.yaml").write_text(api.replace("tasks_max: 512", "tasks_max: 384"))
    diff = f.playbook("bootstrap.yml", "--check", "--diff", *boot,
                      "-e", f"agentgw_gateways_dir={gateways}")
    assert diff.returncode == 0, fatal(diff)
    assert "-  tasks_max: 512" in diff.stdout and "+  tasks_max: 384" in diff.stdout, diff.stdout
    check = f.playbook("rolling-promote.yml", "--check", "-v", *extra)
    assert check.returncode == 0, fatal(check)
    assert check.stdout.count('"result": "would_move"') == len(f.labs), check.stdout[-3000:]
    for lab in f.labs:
        assert lab.exec(["cat", "/etc/agentgw/gateways/api.yaml"]).stdout == api
        assert f.releases(lab) == []
        assert f.main_pid(lab) == 0


def bootstrap_twice(f: Fleet, boot: list[str], pubkey: str, ci_key: Path) -> None:
    """Bootstrap works, a second run changes nothing, and no host holds a private release key
    (the CI key is gone, none was made there) but each trusts the public one."""
    first = f.playbook("bootstrap.yml", *boot)
    assert first.returncode == 0, fatal(first)
    again = f.playbook("bootstrap.yml", *boot)
    assert again.returncode == 0, fatal(again)
    second = recap(again.stdout)
    assert sorted(second) == sorted(lab.name for lab in f.labs)
    assert {h: r["changed"] for h, r in second.items()} == {lab.name: 0 for lab in f.labs}
    for lab in f.labs:
        for path in (ci_key, "/etc/agentgw/release-signing.key"):
            assert lab.exec(["test", "-e", str(path)], check=False).returncode == 1, path
        assert pubkey.splitlines()[1] in lab.exec(
            ["cat", "/etc/agentgw/release-signing.pub"]).stdout


def promote_good_twice(f: Fleet, good: Release) -> dict[str, int]:
    """Every host aligned on the good release; the same again moves nothing. The MainPIDs."""
    promoted = f.playbook("rolling-promote.yml", *good.extra_vars())
    assert promoted.returncode == 0, fatal(promoted)
    assert len(re.findall(rf"api={good.sha}-good ok \d", promoted.stdout)) == len(f.labs), (
        promoted.stdout[-2000:])
    before: dict[str, int] = {}
    for lab in f.labs:
        row = f.status(lab)
        assert release_of(row) == good.sha
        assert aligned(row) == "yes"
        before[lab.name] = f.main_pid(lab)
        assert before[lab.name] > 0
    # The same release again: nothing moves, no task reports a change, no restart.
    same = f.playbook("rolling-promote.yml", *good.extra_vars())
    assert same.returncode == 0, fatal(same)
    assert {h: r["changed"] for h, r in recap(same.stdout).items()} == {
        lab.name: 0 for lab in f.labs}
    assert {lab.name: f.main_pid(lab) for lab in f.labs} == before
    assert len(re.findall(rf"api={good.sha}-good unchanged", same.stdout)) == len(f.labs)
    return before


def refused_everywhere(f: Fleet, forged: Release, good: Release, before: dict[str, int]) -> None:
    """One byte changed under the CI's signature: every host refuses it (staged on all at
    once), and the run stops before any promote."""
    refused = f.playbook("rolling-promote.yml", *forged.extra_vars())
    assert refused.returncode != 0
    assert {h: r["failed"] for h, r in recap(refused.stdout).items()} == {
        lab.name: 1 for lab in f.labs}, refused.stdout[-4000:]
    fatals = [line for line in refused.stdout.splitlines() if line.startswith("fatal")]
    assert len(fatals) == len(f.labs), fatal(refused)
    assert all("signature" in line for line in fatals), fatal(refused)
    assert "Promote each profile" not in refused.stdout
    for lab in f.labs:
        assert f.releases(lab) == [f"{good.sha}-good"]
        assert f.main_pid(lab) == before[lab.name]


def broken_halts(f: Fleet, crash: Release, good: Release, before: dict[str, int]) -> None:
    """A crashing release: host 1 rolls back and halts the play; 2 and 3 have it staged and
    keep running the good release."""
    broken = f.playbook("rolling-promote.yml", *crash.extra_vars())
    assert broken.returncode != 0
    first_host, *others = f.labs
    assert f"HALTED at {first_host.name}" in broken.stdout, broken.stdout[-4000:]
    assert "Hosts not promoted: " + ", ".join(lab.name for lab in others) in broken.stdout, (
        fatal(broken))
    assert "rolled_back" in broken.stdout
    assert "Phases: [" in broken.stdout
    results = recap(broken.stdout)
    assert results[first_host.name]["failed"] == 1
    assert all(results[lab.name]["failed"] == 0 for lab in others), results
    row = f.status(first_host)
    assert release_of(row) == good.sha
    assert aligned(row) == "yes"
    last = row["last_promote"]
    assert isinstance(last, dict) and last["result"] == "rolled_back"
    assert f"{crash.sha}-crash" in f.releases(first_host)
    for lab in others:
        row = f.status(lab)
        assert release_of(row) == good.sha
        assert aligned(row) == "yes"
        assert f.main_pid(lab) == before[lab.name]
        # Staged (added, verified) but never promoted there.
        assert sorted(f.releases(lab)) == sorted([f"{good.sha}-good", f"{crash.sha}-crash"])


@pytest.mark.lab
def test_bootstrap_then_rolling_promote_good_then_broken(tmp_path: Path) -> None:
    """Signed once off-host. Good release: every host aligned on it. The good release with a
    byte changed: refused by each host. Broken release: host 1 rolls back (task failed with
    agentgw's reason and phases), the play halts, hosts 2 and 3 keep their process."""
    releases = build_releases(REPO, tmp_path)
    pubkey = sign_off_host(tmp_path, releases)
    good, crash, forged = releases["good"], releases["crash"], tampered(tmp_path, releases["good2"])
    boot = signing_vars(tmp_path)
    with fleet(REPO, tmp_path) as f:
        bootstrap_twice(f, boot, pubkey, tmp_path / "ci/release.key")
        check_runs(f, tmp_path, boot, good.extra_vars())
        before = promote_good_twice(f, good)
        refused_everywhere(f, forged, good, before)
        broken_halts(f, crash, good, before)


def test_collection_lints_and_documents() -> None:
    """ansible-lint (production profile) passes on the playbooks and the collection, and
    ansible-doc renders every module."""
    lint = subprocess.run([FLEET_VENV / "bin/ansible-lint", "--profile", "production",
                           "playbooks", "ansible_collections"], cwd=FLEET, capture_output=True,
                          text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for module in ("release", "profile", "promote", "status"):
        doc = subprocess.run([FLEET_VENV / "bin/ansible-doc", f"agentgw.fleet.{module}"],
                             cwd=FLEET, capture_output=True, text=True, check=False,
                             env={"ANSIBLE_CONFIG": str(FLEET / "ansible.cfg"),
                                  "PATH": f"{FLEET_VENV / 'bin'}:/usr/bin:/bin"})
        assert doc.returncode == 0, doc.stderr
        assert "RETURN VALUES" in doc.stdout


def test_collection_builds_and_installs(tmp_path: Path) -> None:
    """ansible-galaxy builds the collection into a tarball and installs it elsewhere, where
    ansible-doc finds its modules (from that path, not the checkout)."""
    galaxy = os.fspath(FLEET_VENV / "bin/ansible-galaxy")
    env = {"PATH": f"{FLEET_VENV / 'bin'}:/usr/bin:/bin", "HOME": os.fspath(tmp_path)}
    source = FLEET / "ansible_collections/agentgw/fleet"
    built = subprocess.run([galaxy, "collection", "build", "--output-path", tmp_path, source],
                           capture_output=True, text=True, check=False, env=env)
    assert built.returncode == 0, built.stderr
    (tarball,) = tmp_path.glob("agentgw-fleet-*.tar.gz")
    installed = subprocess.run([galaxy, "collection", "install", "-p", tmp_path / "inst",
                                tarball], capture_output=True, text=True, check=False, env=env)
    assert installed.returncode == 0, installed.stderr
    doc = subprocess.run([FLEET_VENV / "bin/ansible-doc", "agentgw.fleet.promote"],
                         capture_output=True, text=True, check=False, cwd=tmp_path,
                         env={**env, "ANSIBLE_COLLECTIONS_PATH": os.fspath(tmp_path / "inst")})
    assert doc.returncode == 0, doc.stderr
    assert os.fspath(tmp_path / "inst") in doc.stdout
