"""A rolling promote through Ansible across 3 lab hosts (serial 1) beside the sum of three
direct ``agentgw promote`` calls, in the same run (issue 17).

Set-up (untimed): three labs reachable over ssh (agentgw.lab.fleet), bootstrap, then
release A and B copied, added and promoted by the playbook, so both are present everywhere and
B runs. Timed: three direct ``agentgw promote api A`` (one per host, through nsenter: no ssh),
then the playbook promoting B (copy and add are no-ops; three promotes over ssh). Also timed:
the same playbook when nothing moves (Ansible's per-run cost with these hosts) and
``ansible-playbook --list-tasks`` (its fixed start-up: interpreter, collection, parse).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from agentgw.lab.fleet import AGENTGW, FLEET_VENV, PROFILE, build_releases, fleet
from agentgw.run import Completed
from benchmarks.rows import Row, rows_to_json


def _ok(result: Completed | subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-3000:] + result.stderr[-2000:])


REPO = Path(__file__).resolve().parents[1]
FLEET = REPO / "fleet"


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        releases = build_releases(REPO, work)
        a, b = releases["good"], releases["good2"]
        with fleet(REPO, work) as f:
            _ok(f.playbook("bootstrap.yml"))
            _ok(f.playbook("rolling-promote.yml", *a.extra_vars()))
            _ok(f.playbook("rolling-promote.yml", *b.extra_vars()))

            t0 = time.perf_counter()
            for lab in f.labs:
                lab.exec([AGENTGW, "promote", PROFILE, a.sha, "--allow-downgrade", "--json"],
                         timeout=300)
            direct = time.perf_counter() - t0

            t0 = time.perf_counter()
            _ok(f.playbook("rolling-promote.yml", *b.extra_vars()))
            rolling = time.perf_counter() - t0

            t0 = time.perf_counter()
            _ok(f.playbook("rolling-promote.yml", *b.extra_vars()))
            noop = time.perf_counter() - t0

            env = {"PATH": f"{FLEET_VENV / 'bin'}:/usr/bin:/bin", "HOME": os.fspath(work),
                   "ANSIBLE_CONFIG": os.fspath(FLEET / "ansible.cfg")}
            t0 = time.perf_counter()
            _ok(subprocess.run([os.fspath(FLEET_VENV / "bin/ansible-playbook"), "-i",
                                os.fspath(f.inventory), "--list-tasks",
                                os.fspath(FLEET / "playbooks/rolling-promote.yml")],
                               capture_output=True, text=True, env=env, cwd=FLEET, check=False))
            startup = time.perf_counter() - t0
    budget = 1.5 * direct + startup
    return [
        Row(name="3 direct agentgw promote (sum)", value=round(direct, 2), unit="s"),
        Row(
            name="rolling promote, 3 hosts, serial 1",
            value=round(rolling, 2),
            unit="s",
            baseline=round(direct, 2),
            ratio=round(rolling / direct, 2),
            goal=f"<= 1.5x direct + start-up ({budget:.1f} s)",
            ok=rolling <= budget,
        ),
        Row(name="rolling promote, nothing moves", value=round(noop, 2), unit="s"),
        Row(
            name="ansible-playbook start-up (--list-tasks)",
            value=round(startup, 2),
            unit="s",
        ),
    ]


if __name__ == "__main__":
    print(rows_to_json(run()))
