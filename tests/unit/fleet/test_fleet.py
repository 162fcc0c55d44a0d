"""The agentgw.fleet collection over real ssh against three lab hosts (issue 17).

Each host is a lab (real systemd) with a veth link into a namespace of this test and an sshd;
ansible-playbook runs in that namespace. Proven: bootstrap works and a second run changes
nothing; --check moves nothing; a rolling promote of a good release aligns all three, and a
second one changes nothing; a broken
release rolls back on the first host, halts the play, and leaves the other two untouched
(their own `agentgw status --json`, release lists and MainPIDs).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentgw import run
from agentgw.lab.fleet import FLEET_VENV, build_releases, fleet, recap

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


@pytest.mark.lab
def test_bootstrap_then_rolling_promote_good_then_broken(tmp_path: Path) -> None:
    """Good release: every host aligned on it. Broken release: host 1 rolls back (task failed
    with agentgw's reason and phases), the play halts, hosts 2 and 3 keep their process."""
    releases = build_releases(REPO, tmp_path)
    good, crash = releases["good"], releases["crash"]
    with fleet(REPO, tmp_path) as f:
        first = f.playbook("bootstrap.yml")
        assert first.returncode == 0, fatal(first)
        again = f.playbook("bootstrap.yml")
        assert again.returncode == 0, fatal(again)
        second = recap(again.stdout)
        assert sorted(second) == sorted(lab.name for lab in f.labs)
        assert {h: r["changed"] for h, r in second.items()} == {lab.name: 0 for lab in f.labs}

        check = f.playbook("rolling-promote.yml", "--check", *good.extra_vars())
        assert check.returncode == 0, fatal(check)
        for lab in f.labs:
            assert f.releases(lab) == []
            assert f.main_pid(lab) == 0

        promoted = f.playbook("rolling-promote.yml", *good.extra_vars())
        assert promoted.returncode == 0, fatal(promoted)
        assert "Summary" in promoted.stdout
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

        broken = f.playbook("rolling-promote.yml", *crash.extra_vars())
        assert broken.returncode != 0
        first_host, *others = f.labs
        assert f"HALTED at {first_host.name}" in broken.stdout, broken.stdout[-4000:]
        assert "rolled_back" in broken.stdout
        assert "Phases: [" in broken.stdout
        results = recap(broken.stdout)
        assert results[first_host.name]["failed"] == 1
        assert all(lab.name not in results for lab in others), results
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
            assert f.releases(lab) == [f"{good.sha}-good"]


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
